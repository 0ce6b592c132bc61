"""The locustfile end to end: real Locust, a real pool of emulated instances, a real dispatcher, on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # whole stacks or long searches: left out of the quick loop

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "harness" / "kairos_load.py"
SMALL = [
    "--pool-config",
    "g4dn.xlarge=1,r5n.large=2",
    "--min-queries",
    "50",
    "--phase-queries",
    "60",
    "--phase-seconds",
    "2",
]


def locust_cmd(report_dir, *args):
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--report-dir",
        str(report_dir),
        *SMALL,
        *args,
    ]


def run_dir_of(report_dir: Path) -> Path:
    (run,) = [p for p in report_dir.iterdir() if p.is_dir()]
    return run


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it has no command line left
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].strip().startswith("Z")
    except OSError:
        return True


def started_pids(run: Path) -> list[int]:
    meta = json.loads((run / "run.json").read_text())
    return [i["pid"] for i in meta["pool"] if i.get("pid")] + [meta["dispatcher_pid"]]


def test_headless_run_writes_report_and_leaves_nothing_behind(tmp_path):
    proc = subprocess.run(
        locust_cmd(tmp_path, "--dispatchers", "kairos,fcfs", "--rate", "30"),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir_of(tmp_path)
    for name in ("queries.parquet", "summary.parquet", "report.html", "run.json"):
        assert (run / name).exists(), name
    q = pd.read_parquet(run / "queries.parquet")
    s = pd.read_parquet(run / "summary.parquet")
    assert list(s["dispatcher"]) == ["kairos", "fcfs"] and (s["offered_qps"] == 30).all()
    assert len(q) == 2 * 60 and q["request_id"].is_unique and (q["status"] == "ok").all()
    assert (q["latency_ms"] > 0).all() and q["instance_type"].isin(["g4dn.xlarge", "r5n.large"]).all()
    assert json.loads((run / "run.json").read_text())["partial"] is False
    time.sleep(0.5)
    assert all(gone(pid) for pid in started_pids(run))
    assert "POST" in proc.stdout + proc.stderr  # Locust's own statistics still printed


def test_bad_options_are_named_as_locust_users_typed_them(tmp_path):
    proc = subprocess.run(
        locust_cmd(tmp_path, "--pool-config", "r5n.large=x", "--dispatchers", "kairos:nope=1"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "kairos: --dispatchers 'kairos:nope=1': 'nope=1' is not a tunable of kairos" in proc.stderr
    proc = subprocess.run(
        locust_cmd(tmp_path, "--pool-config", "r5n.large=x", "--rate", "5"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "kairos: --pool-config 'r5n.large=x': count must be an integer" in proc.stderr


def test_two_processes_send_each_query_exactly_once(tmp_path):
    proc = subprocess.run(
        locust_cmd(tmp_path, "--dispatchers", "fcfs", "--rate", "40", "--processes", "2"),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    q = pd.read_parquet(run_dir_of(tmp_path) / "queries.parquet")
    assert len(q) == 80 and q["request_id"].is_unique
    assert sorted(q["request_id"]) == sorted(f"p0-{i}" for i in range(80))
    assert q["worker"].nunique() == 2


def test_ctrl_c_leaves_a_partial_readable_report(tmp_path):
    cmd = locust_cmd(tmp_path, "--dispatchers", "kairos", "--rate", "20", "--phase-queries", "2000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if "phase 0: kairos at" in line or time.monotonic() > deadline:
            break
    time.sleep(6)  # some queries complete
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    run = run_dir_of(tmp_path)
    q = pd.read_parquet(run / "queries.parquet")
    assert 20 < len(q) < 2000 and q["request_id"].is_unique
    assert (q["status"] == "ok").sum() >= 20
    assert json.loads((run / "run.json").read_text())["partial"] is True
    assert "partial run" in (run / "report.html").read_text()
    time.sleep(0.5)
    assert all(gone(pid) for pid in started_pids(run)), "".join(lines) + out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_web_ui_mode_runs_and_serves_the_ui(tmp_path):
    import urllib.request

    port = free_port()
    cmd = locust_cmd(tmp_path, "--dispatchers", "fcfs", "--rate", "30")
    cmd[cmd.index("--headless")] = "--autostart"
    cmd += ["--autoquit", "2", "--web-host", "127.0.0.1", "--web-port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    status, deadline = None, time.monotonic() + 60
    while status is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                status = resp.status
        except OSError:
            time.sleep(0.3)
    _, err = proc.communicate(timeout=180)
    assert status == 200 and proc.returncode == 0, err[-3000:]
    run = run_dir_of(tmp_path)
    assert (run / "report.html").exists() and len(pd.read_parquet(run / "queries.parquet")) == 60
