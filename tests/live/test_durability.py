"""Records survive kill -9: the dispatcher's records and a run folder stay readable whenever their writer dies, and
`kairos report` rebuilds the phase a killed live run was in."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.core.record_sink import RecordSink
from harness.core.records import CLIENT_SCHEMA, DISPATCHER_SCHEMA, empty_row
from harness.live.phase import CLIENT_COLUMNS, ClientRecord, PhasePlan, merge_phase
from harness.live.recover import RECOVERED_REASON, RecoveredPhase, recover
from harness.live.run_dir import RunDir
from harness.report.page import PARTIAL_BANNER
from servers import models, v2
from servers.dispatcher import DispatcherConfig
from servers.pool import PoolSpec, start_pool
from servers.process import spawn_server, stop_processes


def _sender(url: str, model: str, prefix: str, answered: list, stop: threading.Event) -> None:
    """Send queries one after another until ``stop``; note (request id, epoch of the answer) for each 200."""
    enc = v2.encode_infer_request(models.make_inputs(models.get_spec(model), 10, np.random.default_rng(0)))
    n = 0
    while not stop.is_set():
        rid = f"{prefix}-{n}"
        n += 1
        req = urllib.request.Request(
            f"{url}/v2/models/{model}/infer", data=enc.body, headers={**enc.headers, "X-Request-ID": rid}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
                if resp.status == 200:
                    answered.append((rid, time.time()))
        except (urllib.error.URLError, OSError):
            if stop.is_set():
                return
            time.sleep(0.01)  # the dispatcher is gone: the sender stops once told


@pytest.mark.slow
def test_kill_9_of_the_dispatcher_leaves_readable_records(tmp_path):
    records = tmp_path / "dispatcher.parquet"
    answered: list[tuple[str, float]] = []
    stop = threading.Event()
    with start_pool(PoolSpec("r5n.large=2", model="ncf", seed=1)) as pool:
        disp = spawn_server(
            "dispatcher",
            DispatcherConfig(pool=pool.as_pool_file(), policy="fcfs", records_path=records),
            name="dispatcher",
        )

        def start(prefix: str) -> list[threading.Thread]:
            threads = [
                threading.Thread(target=_sender, args=(disp.url, "ncf", f"{prefix}{k}", answered, stop), daemon=True)
                for k in range(4)
            ]
            for t in threads:
                t.start()
            return threads

        senders: list[threading.Thread] = []
        try:
            senders = start("a")
            time.sleep(1.5)
            stop.set()
            for t in senders:
                t.join(timeout=10)
            time.sleep(2.0)  # no more appends: the dispatcher's timer writes the rest
            idle = set(pd.read_parquet(records)["request_id"])
            assert {rid for rid, _ in answered} <= idle
            stop.clear()
            senders = start("b")
            time.sleep(2.5)  # a few flushes' worth of traffic, still flowing at the kill
            killed_at = time.time()
            os.kill(disp.pid, signal.SIGKILL)
            disp.proc.wait(timeout=10)
        finally:
            stop.set()
            for t in senders:
                t.join(timeout=10)
            stop_processes([disp])
    frame = pd.read_parquet(records)  # what the killed process left reads as one table
    assert list(frame.columns)[:3] == ["request_id", "model", "batch_size"]
    on_disk = set(frame["request_id"])
    before = [(rid, at) for rid, at in answered if at < killed_at]
    assert len(before) > 100, "too little traffic to judge"
    lost = [killed_at - at for rid, at in before if rid not in on_disk]
    # Every query answered more than about a second before the kill is on disk (the timer flushes each second).
    assert all(age < 1.5 for age in lost), f"lost queries answered up to {max(lost):.2f} s before the kill"
    assert (frame.loc[frame["request_id"].isin([rid for rid, _ in before]), "status"] == "ok").all()
    print(f"\n{len(before)} answered before the kill, {len(lost)} not on disk (oldest {max(lost, default=0):.2f} s)")


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, pandas as pd
    from harness.core.records import QUERY_SCHEMA, conform
    from harness.live.run_dir import RunDir

    rd = RunDir(sys.argv[1], meta={"kind": "live", "model": "m", "qos_ms": 100.0})
    rng = np.random.default_rng(0)
    for phase, rate in enumerate((50.0, 100.0)):
        n = 300
        arrival = 1000.0 + phase * 10 + np.sort(rng.uniform(0, 6, n))
        queries = conform(pd.DataFrame({
            "request_id": [f"p{phase}-{i}" for i in range(n)], "model": "m", "batch_size": 10,
            "arrival_s": arrival, "dispatch_s": arrival, "start_s": arrival,
            "finish_s": arrival + rng.uniform(0.01, 0.09, n), "instance_id": "i-0", "instance_type": "t",
            "policy": "fcfs", "status": "ok", "dispatcher": "fcfs", "phase": phase, "offered_qps": rate,
        }), QUERY_SCHEMA)
        rd.add_phase(queries, {"dispatcher": "fcfs", "phase": phase, "offered_qps": rate, "p99_ms": 90.0})
    os.kill(os.getpid(), signal.SIGKILL)  # killed between phases: no finish(), no report
    """
)


def test_report_rebuilds_from_a_killed_run_folder(tmp_path):
    run = tmp_path / "run-killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    meta = json.loads((run / "run.json").read_text())
    assert meta["partial"] is True and "finished_at" not in meta and not (run / "report.html").exists()
    assert (run / "queries.parquet").is_dir() and len(list((run / "queries.parquet").glob("part-*.parquet"))) == 3
    assert len(pd.read_parquet(run / "queries.parquet")) == 600 and len(pd.read_parquet(run / "summary.parquet")) == 2
    assert not [p.name for p in run.rglob(".*")]  # no temporary file left behind
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert PARTIAL_BANNER in html and 'id="partial-banner"' in html
    assert 'id="chart-latency-cdf"' in html  # the per-query charts come from the parts


def test_report_marks_a_run_without_finished_at_partial(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"dispatcher": ["fcfs"], "phase": [0], "offered_qps": [10.0], "p99_ms": [5.0]}).to_parquet(
        run / "summary.parquet"
    )
    (run / "run.json").write_text(json.dumps({"run_id": "run", "started_at": "2024-05-01T10:00:00Z"}))
    assert main(["report", str(run)]) == 0
    assert PARTIAL_BANNER in (run / "report.html").read_text(encoding="utf-8")


# -- a killed live run's last phase, rebuilt -----------------------------------------------------------------------
def _plan(index: int, n: int, t0: float) -> PhasePlan:
    return PhasePlan(
        index,
        "fcfs",
        20.0,
        "ncf",
        "http://127.0.0.1:1",
        t0,
        [f"p{index}-{i}" for i in range(n)],
        [0.05 * i for i in range(n)],
        [10] * n,
    )


def _client(plan: PhasePlan, ids: range) -> list[ClientRecord]:
    t = plan.start_epoch
    return [
        ClientRecord(f"p{plan.index}-{i}", t + 0.05 * i, t + 0.05 * i, t + 0.05 * i + 0.02, 200, "local") for i in ids
    ]


def _dispatcher_rows(plan: PhasePlan, ids: range) -> list[dict]:
    t = plan.start_epoch
    return [
        {
            **empty_row(DISPATCHER_SCHEMA),
            "request_id": f"p{plan.index}-{i}",
            "model": "ncf",
            "batch_size": 10,
            "arrival_s": t + 0.05 * i,
            "dispatch_s": t + 0.05 * i,
            "start_s": t + 0.05 * i,
            "finish_s": t + 0.05 * i + 0.015,
            "instance_id": "r-0",
            "instance_type": "r5n.large",
            "policy": "fcfs",
            "status": "ok",
            "queue_ms": 0.1,
            "service_ms": 15.0,
            "http_status": 200,
            "attempts": 1,
        }
        for i in ids
    ]


def test_client_log_writes_each_planned_id_once_with_its_phase(tmp_path):
    assert tuple(CLIENT_SCHEMA)[: len(CLIENT_COLUMNS)] == CLIENT_COLUMNS  # ClientRecord's fields, then the labels
    rd = RunDir(tmp_path / "run", meta={"kind": "live"})
    plan = _plan(4, 10, 1000.0)
    log = rd.start_phase(plan)
    log.add(_client(plan, range(3)))
    log.flush()
    assert len(pd.read_parquet(tmp_path / "run" / "client.parquet")) == 3  # on disk before the phase ends
    stray = _client(_plan(3, 10, 990.0), range(5))  # another phase's leftovers
    log.add([*_client(plan, range(2, 6)), *stray])
    log.close(_client(plan, range(10)))
    rd.finish(partial=False, build_html=False)
    c = pd.read_parquet(tmp_path / "run" / "client.parquet")
    assert sorted(c["request_id"]) == sorted(plan.request_ids) and (c["phase"] == 4).all()
    assert (c["dispatcher"] == "fcfs").all() and (c["offered_qps"] == 20.0).all()
    assert PhasePlan(**json.loads((tmp_path / "run" / "phases" / "phase-4.json").read_text())) == plan
    assert not (tmp_path / "run" / "writer.lock").exists()


def test_recover_rebuilds_the_phase_a_killed_run_was_in(tmp_path):
    run = tmp_path / "run"
    meta = {"kind": "live", "model": "ncf", "qos_ms": 100.0, "cost_per_h": 1.5, "config": {"min_queries": 20}}
    rd = RunDir(run, meta=meta)
    disp = RecordSink(run / "dispatcher.parquet", DISPATCHER_SCHEMA, flush_on_append=False)
    # Phase 0 finished as a live phase does: client log closed, rows merged, summary row written.
    p0 = _plan(0, 40, 1000.0)
    log = rd.start_phase(p0)
    log.close(_client(p0, range(40)))
    disp.extend(_dispatcher_rows(p0, range(40)))
    merged0 = merge_phase(p0, _client(p0, range(40)), pd.DataFrame(_dispatcher_rows(p0, range(40))).to_dict("list"))
    rd.add_phase(merged0, {"dispatcher": "fcfs", "phase": 0, "offered_qps": 20.0, "p99_ms": 15.0, "valid": True})
    # Phase 1 killed mid-way: 30 of 100 sent; the client's last second (25..29) never reached disk, the dispatcher
    # recorded all 30 (it outlives the load generator and flushes on its way out).
    p1 = _plan(1, 100, 1010.0)
    log = rd.start_phase(p1)
    log.add(_client(p1, range(25)))
    log.flush()
    log.add(_client(p1, range(25, 30)))  # buffered only
    disp.extend(_dispatcher_rows(p1, range(30)))
    assert recover(run) == []  # the writer still runs: its folder is left alone
    rd.writer_lock.release()  # what the kernel does for a process killed with kill -9

    assert recover(run) == [RecoveredPhase(1, "fcfs", 30, 25)]
    q = pd.read_parquet(run / "queries.parquet")
    assert q["request_id"].is_unique and len(q) == 70
    q1 = q[q["phase"] == 1].set_index("request_id")
    assert (q1.loc[[f"p1-{i}" for i in range(25)], "status"] == "ok").all()
    assert (q1.loc[[f"p1-{i}" for i in range(25, 30)], "status"] == "failed").all()  # no client answer on disk
    assert q1.loc["p1-3", "latency_ms"] == pytest.approx(20.0) and q1.loc["p1-3", "instance_type"] == "r5n.large"
    s = pd.read_parquet(run / "summary.parquet")
    assert list(s["phase"]) == [0, 1]
    row = s.iloc[1]
    assert not row["valid"] and row["invalid_reason"] == RECOVERED_REASON
    assert row["dispatcher"] == "fcfs" and row["offered_qps"] == 20.0 and row["cost_per_h"] == 1.5
    assert (row["planned_queries"], row["sent_queries"], row["dispatcher_records_queries"]) == (100, 25, 30)
    meta = json.loads((run / "run.json").read_text())
    assert meta["partial"] is True and meta["recovered_phases"] == [1]
    assert recover(run) == [] and len(pd.read_parquet(run / "queries.parquet")) == 70  # once only

    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert PARTIAL_BANNER in html and RECOVERED_REASON in html


def test_recover_does_not_count_a_phase_twice_when_its_rows_were_written(tmp_path):
    run = tmp_path / "run"
    rd = RunDir(run, meta={"kind": "live", "model": "ncf", "qos_ms": 100.0})
    p0 = _plan(0, 30, 1000.0)
    rd.start_phase(p0).close(_client(p0, range(30)))
    rd.add_queries(merge_phase(p0, _client(p0, range(30)), {}))  # killed before its summary row
    rd.writer_lock.release()
    assert recover(run) == [RecoveredPhase(0, "fcfs", 30, 30)]
    assert len(pd.read_parquet(run / "queries.parquet")) == 30
    assert pd.read_parquet(run / "summary.parquet")["invalid_reason"].tolist() == [RECOVERED_REASON]


def test_recover_leaves_finished_and_simulated_runs_alone(tmp_path):
    rd = RunDir(tmp_path / "live", meta={"kind": "live"})
    rd.start_phase(_plan(0, 5, 1000.0)).close(_client(_plan(0, 5, 1000.0), range(5)))
    rd.finish(partial=False, build_html=False)  # finished: a phase without a summary row stays as it is
    assert recover(tmp_path / "live") == [] and not (tmp_path / "live" / "summary.parquet").exists()
    assert recover(tmp_path / "nothing-here") == []
