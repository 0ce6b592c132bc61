"""Records survive kill -9: the dispatcher's records and a run folder stay readable whenever their writer dies."""

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
