"""Chaos in a live run: the schedule's grammar, the controller's timing, and a run that survives a killed instance."""

import math
import time

import pandas as pd
import pytest

from harness.core.errors import InputError
from harness.live.chaos import Chaos, ChaosEvent, parse_chaos
from harness.live.options import LiveOptions
from harness.live.replay import AsyncioLoadGenerator
from harness.live.run import LiveRun
from harness.measure.fault_cost import fault_cost
from servers.faults import Fault


def test_parse_chaos_reads_the_schedule_in_time_order():
    events = parse_chaos("stall:g4dn.xlarge-0@45s:5s, kill:r5n.large-3@30s,spike:r5n.large-1@1m:10s:250ms")
    assert [e.action for e in events] == ["kill", "stall", "spike"]
    kill, stall, spike = events
    assert kill == ChaosEvent("kill", "r5n.large-3", 30.0)
    assert stall.at_s == 45.0 and stall.duration_s == 5.0 and stall.fault == Fault("stall", 0.0, 5.0)
    assert spike.at_s == 60.0 and spike.fault.extra_ms == 250.0
    assert parse_chaos("kill:a-0@2s:3s")[0].duration_s == 3.0
    assert parse_chaos("error:a-0@1s:2s:503")[0].label == "error:a-0@1s:2s:503"


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "no event"),
        ("kill r5n.large-3@30s", "expected ACTION:INSTANCE@AT"),
        ("kill:r5n.large-3", "expected ACTION:INSTANCE@AT"),
        ("melt:r5n.large-3@1s", "action 'melt'"),
        ("stall:a-0@1s", "needs a duration"),
        ("restart:a-0@1s:2s", "restart: AT only"),
        ("kill:a-0@soon", "expected a time"),
    ],
)
def test_parse_chaos_names_what_is_wrong(text, words):
    with pytest.raises(InputError, match=words) as err:
        parse_chaos(text)
    assert err.value.field == "chaos"


class FakeTarget:
    """Records what the controller did, and when."""

    def __init__(self, ids=("a-0", "a-1"), can_kill=True, fail_on=()):
        self.ids, self.can_kill, self.fail_on = ids, can_kill, fail_on
        self.calls: list[tuple[str, str, float]] = []
        self.down: set[str] = set()

    def _call(self, what, iid):
        if iid in self.fail_on:
            raise ConnectionRefusedError("nobody home")
        self.calls.append((what, iid, time.time()))

    def kill(self, iid):
        self._call("kill", iid)
        self.down.add(iid)

    def restart(self, iid):
        self._call("restart", iid)
        self.down.discard(iid)

    def inject(self, iid, fault):
        self._call(fault.kind, iid)

    def dead(self):
        return sorted(self.down)


def test_controller_fires_on_time_restarts_after_a_kill_and_logs_everything():
    target = FakeTarget(fail_on=("a-1",))
    chaos = Chaos(parse_chaos("kill:a-0@0.1s:0.2s,error:a-1@0.15s:1s"), target, log=lambda _: None)
    t0 = time.time()
    chaos.arm(t0, "fcfs")
    time.sleep(0.6)
    chaos.disarm()
    assert [(w, i) for w, i, _ in target.calls] == [("kill", "a-0"), ("restart", "a-0")]
    kill_at, restart_at = target.calls[0][2] - t0, target.calls[1][2] - t0
    assert 0.09 <= kill_at < 0.25 and 0.29 <= restart_at < 0.5
    actions = {e["action"]: e for e in chaos.entries}
    assert set(actions) == {"kill", "restart", "error"}
    assert "ConnectionRefusedError" in actions["error"]["error"]  # not delivered: logged, the run goes on
    assert actions["kill"]["dispatcher"] == "fcfs" and actions["kill"]["armed_epoch"] == t0


def test_disarm_cancels_what_has_not_fired_and_heal_restarts_the_dead():
    target = FakeTarget()
    chaos = Chaos(parse_chaos("kill:a-0@0.05s,kill:a-1@5s"), target, log=lambda _: None)
    chaos.arm(time.time(), "kairos")
    time.sleep(0.3)
    chaos.disarm()
    assert [(w, i) for w, i, _ in target.calls] == [("kill", "a-0")]
    assert chaos.heal() == ["a-0"] and target.calls[-1][:2] == ("restart", "a-0") and not target.down


def test_controller_checks_targets_against_the_pool():
    with pytest.raises(InputError, match="no instance b-7 in the pool"):
        Chaos(parse_chaos("kill:b-7@1s"), FakeTarget(), log=lambda _: None)
    with pytest.raises(InputError, match="need a pool the run starts"):
        Chaos(parse_chaos("kill:a-0@1s"), FakeTarget(can_kill=False), log=lambda _: None)
    Chaos(parse_chaos("exit:a-0@1s"), FakeTarget(can_kill=False), log=lambda _: None)  # the instance does it itself


def test_fault_cost_splits_a_phase_at_the_window():
    queries = pd.DataFrame(
        {
            "arrival_s": [0.0, 1.0, 2.0, 3.0, 4.0],
            "finish_s": [0.01, 1.5, math.nan, 3.01, 4.01],
            "status": ["ok", "ok", "failed", "ok", "ok"],
        }
    )
    cost = fault_cost(queries, 1.0, 3.0, qos_ms=100.0)
    assert cost["queries_in_window"] == 2 and cost["not_served_in_window"] == 1
    assert cost["violations_in_window"] == 2 and math.isinf(cost["p99_in_window_ms"])
    assert cost["queries_outside"] == 3 and cost["violations_outside"] == 0
    assert cost["p99_outside_ms"] == pytest.approx(10.0)


@pytest.mark.slow
def test_a_run_survives_a_killed_instance_and_reports_the_fault(tmp_path):
    """Two dispatchers, one instance of four SIGKILLed in each one's phase: every query accounted for, the instance
    back for the second dispatcher, the fault and its cost in faults.parquet, the summary and the report."""
    options = LiveOptions(
        model="rm2",
        pool_config="r5n.large=4",
        dispatchers=("fcfs", "kairos"),
        rate_qps=30.0,
        phase_seconds=8.0,
        phase_queries=100,
        min_queries=50,
        report_dir=tmp_path,
        lead_s=1.0,
        chaos=parse_chaos("kill:r5n.large-2@3s,spike:r5n.large-0@2s:2s:100ms"),
    )
    lines: list[str] = []
    run = LiveRun(options, log=lines.append)
    run.start()
    run_path = run.run_dir.path
    pool = run.stack._pool
    pids_before = list(pool.pids)
    report = run.run(AsyncioLoadGenerator())
    assert report is not None and report.exists()
    summary = pd.read_parquet(run_path / "summary.parquet")
    assert list(summary["dispatcher"]) == ["fcfs", "kairos"]
    # The books hold: every planned query once, sent and answered or recorded with its reason.
    assert (summary["accounting_ok"]).all(), summary.filter(like="acc").to_dict("records")
    assert (summary["fault_count"] == 2).all() and summary["faults"].str.contains("kill r5n.large-2").all()
    queries = pd.read_parquet(run_path / "queries.parquet")
    assert queries["request_id"].is_unique and len(queries) == summary["planned_queries"].sum()
    faults = pd.read_parquet(run_path / "faults.parquet")
    kills = faults[faults["action"] == "kill"]
    assert list(kills["dispatcher"]) == ["fcfs", "kairos"] and (kills["error"] == "").all()
    # Killed 3 s into each dispatcher's phase, it stayed down: later queries went to the other three.
    for _, k in kills.iterrows():
        phase = queries[queries["dispatcher"] == k["dispatcher"]]
        late = phase[phase["arrival_s"] > k["fired_epoch"] + 1.0]
        assert len(late) > 50 and "r5n.large-2" not in set(late["instance_id"])
        assert k["queries_in_window"] > 50 and k["queries_outside"] > 30
    # Between dispatchers it was restarted (a new process), and the dispatcher took it back.
    assert any("r5n.large-2 restarted" in line for line in lines)
    assert pool.pids[2] != pids_before[2] and pool.pids[:2] == pids_before[:2]
    html = report.read_text(encoding="utf-8")
    assert 'id="chart-faults"' in html and "Faults injected" in html and "kill r5n.large-2" in html
