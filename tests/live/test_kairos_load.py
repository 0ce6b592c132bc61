"""The locustfile end to end: real Locust, a real pool of emulated instances, a real dispatcher, on loopback."""

import json
import os
import re
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
    assert s["accounting_ok"].all() and (s["planned_queries"] == s["answered_ok_queries"]).all()
    assert len(q) == 2 * 60 and q["request_id"].is_unique and (q["status"] == "ok").all()
    assert (q["latency_ms"] > 0).all() and q["instance_type"].isin(["g4dn.xlarge", "r5n.large"]).all()
    meta = json.loads((run / "run.json").read_text())
    assert meta["partial"] is False
    assert meta["config"]["lead_s"] == 0.5  # no worker processes: phases need no 2 s to reach them
    time.sleep(0.5)
    assert all(gone(pid) for pid in started_pids(run))
    assert "POST" in proc.stdout + proc.stderr  # Locust's own statistics still printed


def test_an_overloaded_phase_is_measured_and_the_run_still_succeeds(tmp_path):
    # QoS 10 ms: the queue deadline (10 x QoS) passes for most queries at this rate, and they are answered 504.
    cmd = locust_cmd(tmp_path, "--dispatchers", "fcfs", "--rate", "300", "--qos-ms", "10")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir_of(tmp_path)
    q = pd.read_parquet(run / "queries.parquet")
    s = pd.read_parquet(run / "summary.parquet")
    assert (q["status"] == "timeout").any() and (q.loc[q["status"] == "timeout", "http_status"] == 504).all()
    assert len(q) == 600 and q["request_id"].is_unique and not s["valid"].any()  # 300 qps x 2 s


def test_chaos_kills_an_instance_mid_phase_and_the_run_reports_it(tmp_path):
    cmd = locust_cmd(
        tmp_path, "--dispatchers", "fcfs", "--rate", "30", "--phase-seconds", "6", "--chaos", "kill:r5n.large-1@2s"
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chaos: kill r5n.large-1 at +2.0 s (fcfs)" in proc.stdout + proc.stderr
    run = run_dir_of(tmp_path)
    s = pd.read_parquet(run / "summary.parquet")
    q = pd.read_parquet(run / "queries.parquet")
    f = pd.read_parquet(run / "faults.parquet")
    assert s["accounting_ok"].all() and s["faults"].tolist() == ["kill r5n.large-1"]
    assert q["request_id"].is_unique and len(q) == s["planned_queries"].sum()
    assert f["action"].tolist() == ["kill"] and f["queries_in_window"].iloc[0] > 0
    assert "Faults injected" in (run / "report.html").read_text(encoding="utf-8")
    time.sleep(0.5)
    assert all(gone(pid) for pid in started_pids(run))


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
    # The workers' records reached the master's client.parquet while the phase ran (in batches), each id once.
    client = run_dir_of(tmp_path) / "client.parquet"
    assert sorted(pd.read_parquet(client)["request_id"]) == sorted(q["request_id"])
    assert len(list(client.glob("part-*.parquet"))) >= 4  # the empty part 0, >= 2 batches, the phase's end


def test_ctrl_c_leaves_a_partial_readable_report(tmp_path):
    cmd = locust_cmd(tmp_path, "--dispatchers", "kairos", "--rate", "20", "--phase-queries", "2000")
    # Ctrl-C reaches a foreground process; one started from a background shell job (CI under `nohup ... &`) inherits
    # SIGINT ignored, and so would Locust here: give it the terminal's default, as a user at a prompt has.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
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


@pytest.mark.parametrize("processes", [0, 2], ids=["local", "processes-2"])
def test_kill_9_mid_phase_leaves_readable_queries_and_report_rebuilds_the_phase(tmp_path, processes):
    import psutil

    # Two 12 s phases at 15 qps (within the small pool's capacity, about 22 qps); Locust is killed 6 s into the second.
    cmd = locust_cmd(tmp_path, "--dispatchers", "kairos,fcfs", "--rate", "15", "--phase-queries", "180")
    cmd += ["--processes", str(processes)] if processes else []
    # The dispatcher stamps its records with its start's wall clock plus the monotonic time since: this is that
    # offset (it starts after this line), so a wall clock stepped during the test (a paused VM set right, NTP) does
    # not shift the kill against its records.
    wall_minus_mono_s = time.time() - time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines = []
    try:
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            lines.append(line)
            if "phase 1: fcfs at" in line or time.monotonic() > deadline:
                break
        run = run_dir_of(tmp_path)
        plan_file = run / "phases" / "phase-1.json"  # written just after that line
        while not plan_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        plan = json.loads(plan_file.read_text())
        time.sleep(max(0.0, plan["start_epoch"] + 6.0 - time.time()))
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]  # workers, pool, dispatcher
        killed_mono = time.monotonic()
        clock_step_s = time.time() - killed_mono - wall_minus_mono_s
        killed_at = killed_mono + wall_minus_mono_s  # on the dispatcher's clock
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed on the way out
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    log = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, log[-3000:]
    # Readable at once, whatever the moment of the kill: the finished phase, nothing of the one in progress yet.
    q = pd.read_parquet(run / "queries.parquet")
    assert sorted(set(q["phase"])) == [0] and len(q) == 180, log[-3000:]
    # The pool's instances and the dispatcher see their stdin close and exit by themselves; so do forked workers.
    pids = sorted({*started_pids(run), *children})
    assert len(pids) >= 4 + processes  # three instances and the dispatcher, and the workers
    deadline = time.monotonic() + 20
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(pid) for pid in pids), f"still running: {[pid for pid in pids if not gone(pid)]}"
    assert not [p.name for p in run.rglob(".*")]  # no half-written file

    report = subprocess.run(
        [sys.executable, "-m", "harness.cli", "report", str(run)], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert "recovered phase 1 (fcfs)" in report.stderr
    q = pd.read_parquet(run / "queries.parquet")
    assert q["request_id"].is_unique and sorted(set(q["phase"])) == [0, 1]
    q1 = q[q["phase"] == 1].set_index("request_id")
    # What the dispatcher (which outlived the load generator) answered: every answer older than about a second and
    # a half reached the client's records on disk.
    d = pd.read_parquet(run / "dispatcher.parquet")
    d1 = d[d["request_id"].str.startswith("p1-") & (d["status"] == "ok")]
    before = d1[d1["finish_s"] < killed_at]
    assert len(before) > 60, "too little of the phase ran to judge"
    recovered_ok = set(q1.index[q1["status"] == "ok"])
    lost_age_s = killed_at - d1.loc[~d1["request_id"].isin(recovered_ok), "finish_s"]
    lost_ids = d1.loc[lost_age_s.index, "request_id"]
    # On failure, enough to tell a late kill, a dropped batch of records, a record kept with another status and a
    # stepped clock apart (one CI run, timed on the wall clock then, lost 12 answers "8.8-9.6 s" before the kill and
    # none in its last second: as many, and as spread, as the answers of the last second lost in every run).
    why = (
        f"lost answers up to {lost_age_s.max():.2f} s before the kill, which came "
        f"{killed_at - plan['start_epoch']:.2f} s into phase 1 (the wall clock moved {clock_step_s:+.2f} s against "
        "the monotonic one during the test); their client rows: "
        f"{q1.reindex(lost_ids)['status'].fillna('none').value_counts().to_dict()}; parts: "
        f"{sorted(p.name for p in (run / 'client.parquet').glob('*'))[-12:] if (run / 'client.parquet').is_dir() else '-'}"
        f"\n{log[-2000:]}"
    )
    assert (lost_age_s < 1.5).all(), why
    assert set(d1["request_id"]) - set(q1.index) == set()  # each answered query is a row, once
    s = pd.read_parquet(run / "summary.parquet")
    assert list(s["phase"]) == [0, 1] and not s.iloc[1]["valid"]
    assert s.iloc[1]["invalid_reason"] == "interrupted: recovered after the run was killed"
    html = (run / "report.html").read_text()
    assert "partial run" in html
    lost_before = lost_age_s[lost_age_s > 0]
    print(
        f"\nphase 1: {len(before)} answered by the dispatcher before the kill, {len(recovered_ok)} recovered as "
        f"answered, {len(lost_before)} lost (answered {lost_before.min() if len(lost_before) else 0:.2f} to "
        f"{lost_before.max() if len(lost_before) else 0:.2f} s before the kill)"
    )


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


# -- the web UI is safe by default (docs/security.md) -------------------------------------------------------------
OPTIONS_PROBE = r"""
import json
from argparse import Namespace

import harness.kairos_load as k
from harness.core.errors import InputError
from locust.argument_parser import default_args_dict, get_parser

parser = get_parser(default_config_files=[])
own = set(default_args_dict())
ours = {a.dest: a for a in parser._actions if a.dest not in own and hasattr(a, "include_in_web_ui")}
opts = parser.parse_args([])
out = {
    "web_host": opts.web_host,
    "ours": sorted(ours),
    "in_ui": sorted(d for d, a in ours.items() if a.include_in_web_ui),
    "types": {d: a.type.__name__ for d, a in ours.items() if a.type in (int, float)},
}
# what Locust's start-form handler leaves behind: text where the default is None, its own type() elsewhere
ui = dict(vars(opts), rate="30", qos_ms="", speedup="", sweep="on", phase_queries="60", trace="/etc/passwd")
live = k.live_options(Namespace(**ui), {"trace": "", "pool": "", "report_dir": "reports", "profiles": ""})
out["live"] = {"rate": live.rate_qps, "qos": live.qos_ms, "sweep": live.sweep, "pq": live.phase_queries,
               "trace": live.trace, "report_dir": str(live.report_dir)}
errors = {}
for dest, value in [("rate", "abc"), ("seed", "1.5"), ("phase_seconds", "nan"), ("sweep", "maybe"), ("mode", "x"),
                    ("phase_queries", ""), ("chaos", "melt:r5n.large-0@1s"), ("pin_cores", "maybe")]:
    try:
        k.live_options(Namespace(**dict(vars(opts), **{dest: value})))
    except InputError as exc:
        errors[dest] = exc.shown_as(k.FLAGS)
try:  # a switch that is fine as text, refused with the default emulated pool
    k.live_options(Namespace(**dict(vars(opts), pin_cores="on")))
except InputError as exc:
    errors["pin_cores emulated"] = exc.shown_as(k.FLAGS)
out["pin_cores onnx"] = k.live_options(Namespace(**dict(vars(opts), pin_cores="on", mode="onnx"))).pin_cores
out["errors"] = errors
print(json.dumps(out))
"""


def test_options_are_typed_and_paths_stay_off_the_web_ui():
    proc = subprocess.run([sys.executable, "-c", OPTIONS_PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["web_host"] == "127.0.0.1"
    paths = {"trace", "pool", "report_dir", "profiles", "dispatcher_url", "dispatcher_token_file"}
    assert paths < set(out["ours"]) and not paths & set(out["in_ui"])
    assert set(out["in_ui"]) == set(out["ours"]) - paths
    assert out["types"] == {
        "qos_ms": "float",
        "rate": "float",
        "speedup": "float",
        "phase_seconds": "float",
        "phase_queries": "int",
        "seed": "int",
        "tolerance": "float",
        "max_phases": "int",
        "min_queries": "int",
        "replications": "int",
        "interval_steps": "int",
    }
    live = out["live"]
    assert live == {"rate": 30.0, "qos": None, "sweep": True, "pq": 60, "trace": None, "report_dir": "reports"}
    assert out["errors"] == {
        "rate": "--rate 'abc': must be a number",
        "seed": "--seed '1.5': must be an integer",
        "phase_seconds": "--phase-seconds 'nan': must be a finite number",
        "sweep": "--sweep 'maybe': must be on or off (true/false, 1/0)",
        "mode": "--mode 'x': expected one of emulated, onnx",
        "chaos": "--chaos 'melt:r5n.large-0@1s': action 'melt': expected one of kill, restart, spike, stall, error, exit",
        "phase_queries": "--phase-queries '': a value is required",
        "pin_cores": "--pin-cores 'maybe': must be on or off (true/false, 1/0)",
        "pin_cores emulated": "--pin-cores pins the ONNX Runtime servers this run starts: give --mode onnx and no pool file",
    }
    assert out["pin_cores onnx"] is True


class WebUI:
    """A locustfile process with its web UI (no --headless, no --autostart); ``stop()`` sends SIGTERM."""

    def __init__(self, tmp_path: Path, *args: str):
        import urllib.request

        self.port = free_port()
        self.log_path = tmp_path / "locust.log"
        cmd = [a for a in locust_cmd(tmp_path / "reports", *args) if a != "--headless"]
        cmd += ["--web-port", str(self.port)]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as resp:
                    assert resp.status == 200
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"no web UI on port {self.port}:\n{self.log()[-3000:]}") from None
                time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text()

    def listening(self) -> list[str]:
        import psutil

        conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        return sorted(c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == self.port)

    def swarm(self, **fields: str) -> dict:
        """POST /swarm as the browser's start form does (application/x-www-form-urlencoded)."""
        import urllib.parse
        import urllib.request

        data = urllib.parse.urlencode({"user_count": "1", "spawn_rate": "1", "host": "", **fields}).encode()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/swarm", data=data, timeout=60) as resp:
            assert resp.status == 200
            return json.loads(resp.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def test_web_ui_binds_loopback_unless_told_otherwise(tmp_path):
    ui = WebUI(tmp_path)
    try:
        assert ui.listening() == ["127.0.0.1"]
        assert f"Starting web interface at http://127.0.0.1:{ui.port}" in ui.log()
    finally:
        ui.stop()
    assert "without a login" not in ui.log()
    ui = WebUI(tmp_path, "--web-host", "0.0.0.0")  # asked for explicitly: the user gets it, and a warning
    try:
        assert ui.listening() == ["0.0.0.0"]
    finally:
        ui.stop()
    assert f"kairos: the web UI listens on 0.0.0.0 port {ui.port} without a login" in ui.log()


def test_web_ui_bad_numbers_get_one_clear_error(tmp_path):
    ui = WebUI(tmp_path, "--dispatchers", "fcfs")
    try:
        answer = ui.swarm(rate="abc", phase_seconds="2")
        assert answer["success"] is False and answer["message"] == "kairos: --rate 'abc': must be a number"
        # Locust's own handler would answer a 500 for a float option given text that is no number
        answer = ui.swarm(rate="30", phase_seconds="x")
        assert answer["success"] is False and answer["message"] == "kairos: --phase-seconds 'x': must be a number"
        assert ui.proc.poll() is None  # the UI stays up to take a corrected form
    finally:
        ui.stop()
    log = ui.log()
    assert log.count("kairos: --rate 'abc': must be a number") == 1
    assert "Traceback" not in log and "resulted in a 500" not in log
    assert not (tmp_path / "reports").exists()  # nothing started


def test_web_ui_start_form_is_typed_and_cannot_name_files(tmp_path):
    elsewhere, html = tmp_path / "elsewhere", tmp_path / "evil.html"
    ui = WebUI(tmp_path)
    try:
        answer = ui.swarm(
            dispatchers="fcfs",
            rate="30",  # text, as every field from the browser
            qos_ms="",
            speedup="",
            sweep="false",
            phase_queries="60",
            # options the UI does not show: Locust's handler would copy each onto parsed_options
            trace="/etc/passwd",
            pool="/etc/passwd",
            profiles="/etc/passwd",
            report_dir=str(elsewhere),
            html_file=str(html),
        )
        assert answer["success"] is True, answer
        deadline = time.monotonic() + 180
        while not any(s in ui.log() for s in ("report in ", "ERROR/kairos")) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        code = ui.stop()
    log = ui.log()
    assert code == 0, log[-3000:]
    assert "kairos: ignored --pool, --profiles, --report-dir, --trace, html_file from the web UI" in log
    run = run_dir_of(tmp_path / "reports")
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["rate_qps"] == 30.0 and config["sweep"] is False and config["dispatchers"] == ["fcfs"]
    assert config["trace"] is None and config["pool_file"] is None and config["profiles"] is None
    s = pd.read_parquet(run / "summary.parquet")
    assert list(s["dispatcher"]) == ["fcfs"] and (s["offered_qps"] == 30).all()
    assert len(pd.read_parquet(run / "queries.parquet")) == 60
    assert not elsewhere.exists() and not html.exists()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores this process may use")
def test_a_pinned_onnx_run_pins_its_server_and_its_worker_processes(tmp_path):
    env = dict(os.environ, KAIROS_PROFILE_DIR=str(tmp_path / "cache"), KAIROS_MODEL_DIR=str(tmp_path / "models"))
    args = ["--mode", "onnx", "--pool-config", "cpu-1t=1", "--model", "ncf", "--qos-ms", "50", "--pin-cores"]
    cmd = locust_cmd(tmp_path / "reports", *args, "--dispatchers", "fcfs", "--rate", "40", "--processes", "1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from servers.cpu_affinity import format_cpus

    cores = sorted(os.sched_getaffinity(0))  # the server gets the highest, the harness the rest
    assert f"pinned: cpu-1t-0 on cores {cores[-1]}; load generator and dispatcher on {format_cpus(cores[:-1])}" in (
        proc.stderr
    )
    # The worker forked by --processes started unpinned; it answers with the cores it runs on, read back from /proc.
    assert re.search(rf"pinned: worker \S+ on cores {format_cpus(cores[:-1])}, with the dispatcher", proc.stderr)
    assert not re.search(r"WARNING/kairos: .*worker", proc.stderr)
    run = run_dir_of(tmp_path / "reports")
    meta = json.loads((run / "run.json").read_text())
    assert meta["pool"][0]["cpus"] == str(cores[-1]) and meta["harness_cpus"] == format_cpus(cores[:-1])
    assert "servers pinned, harness on cores" in (run / "report.html").read_text(encoding="utf-8")
