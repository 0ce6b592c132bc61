"""Pools of real server processes: startup, pool file, and no process left behind; pool-file validation."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from harness.core.errors import InputError
from servers import models, v2
from servers.emulated import EmulatedConfig
from servers.pool import PoolSpec, start_pool
from servers.pool_file import load_pool_file
from servers.process import spawn_server, stop_processes


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pids, timeout=10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if not _gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


def _infer(url, model, batch):
    enc = v2.encode_infer_request(models.make_inputs(models.get_spec(model), batch, np.random.default_rng(0)))
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=enc.body, headers=enc.headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return v2.decode_infer_response(resp.read(), dict(resp.headers))


def test_pool_starts_processes_writes_file_and_cleans_up(tmp_path):
    spec = PoolSpec("g4dn.xlarge=1,r5n.large=2", model="ncf", seed=5)
    with start_pool(spec) as pool:
        pids = pool.pids
        assert len(set(pids)) == 3 and os.getpid() not in pids
        assert all(not _gone(p) for p in pids)
        assert [i.id for i in pool.instances] == ["g4dn.xlarge-0", "r5n.large-0", "r5n.large-1"]
        assert len({i.url for i in pool.instances}) == 3
        path = pool.write(tmp_path / "sub" / "pool.json")
        doc = json.loads(path.read_text())
        assert doc["model"] == "ncf" and doc["mode"] == "emulated"
        assert doc["instances"][0] == {
            "id": "g4dn.xlarge-0",
            "url": pool.instances[0].url,
            "instance_type": "g4dn.xlarge",
            "usd_per_hour": 0.526,
            "pid": pids[0],
        }
        loaded = load_pool_file(path)
        assert loaded.instances == pool.instances and loaded.model == "ncf"
        assert loaded.cost_per_h == pytest.approx(0.526 + 2 * 0.149)
        assert str(loaded.config) == "g4dn.xlarge=1,r5n.large=2"
        for inst in pool.instances:
            out = _infer(inst.url, "ncf", 30)
            assert out.parameters["instance_type"] == inst.instance_type
            assert out.outputs["prob"].shape == (30, 1)
        assert pool.dead() == []
    assert _wait_gone(pids, timeout=0.5) == []  # stop() reaped them before returning
    assert len(set(spec.seeds())) == 3 and spec.seeds() == PoolSpec("r5n.large=3", seed=5).seeds()


@pytest.mark.slow
def test_serve_pool_command_stops_children_on_sigterm_and_parent_death(tmp_path):
    pool_file = tmp_path / "pool.json"
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "serve",
        "pool",
        "--config",
        "r5n.large=2",
        "--model",
        "ncf",
        "--pool-file",
        str(pool_file),
    ]
    for how in (signal.SIGTERM, signal.SIGKILL):
        parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = parent.stdout.readline()
            assert line.startswith("READY "), line
            info = json.loads(line[6:])
            children = [i["pid"] for i in info["instances"]]
            assert len(children) == 2 and pool_file.exists()
            assert [i.pid for i in load_pool_file(pool_file).instances] == children
            parent.send_signal(how)
            parent.wait(timeout=15)
            if how == signal.SIGTERM:
                assert parent.returncode == 0
            # SIGKILL gives the parent no chance to clean up: the children notice their stdin closing
            assert _wait_gone(children, timeout=10) == []
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()


@pytest.mark.slow
@pytest.mark.parametrize("restart", [False, True])
def test_serve_pool_survives_a_killed_member(tmp_path, restart):
    pool_file = tmp_path / "pool.json"
    cmd = [sys.executable, "-m", "harness.cli", "serve", "pool", "--config", "r5n.large=3", "--model", "ncf"]
    cmd += ["--pool-file", str(pool_file)] + (["--restart"] if restart else [])
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(parent.stdout.readline()[6:])
        victim, *others = info["instances"]
        os.kill(victim["pid"], signal.SIGKILL)
        assert _wait_gone([victim["pid"]]) == []
        time.sleep(1.5)  # the pool notices within half a second, a restart takes about as long
        assert parent.poll() is None  # the pool process carries on
        for inst in others:
            assert _infer(inst["url"], "ncf", 4).outputs["prob"].shape == (4, 1)
        if restart:
            deadline = time.monotonic() + 20
            while load_pool_file(pool_file).instances[0].pid == victim["pid"] and time.monotonic() < deadline:
                time.sleep(0.2)
            back = load_pool_file(pool_file).instances[0]
            assert back.pid != victim["pid"] and back.url == victim["url"]  # the same address: dispatchers find it
            assert _infer(back.url, "ncf", 4).outputs["prob"].shape == (4, 1)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=15)
        err = parent.stderr.read()
        assert f"instance {victim['id']} exited (code -9); the others keep serving" in err
        assert ("is back at" in err) == restart
        assert _wait_gone([i["pid"] for i in others]) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_child_failure_is_reported(tmp_path):
    with pytest.raises(InputError, match=r"exited with code 2 before it was ready: .*unknown instance type 'nope'"):
        spawn_server("emulated", EmulatedConfig(instance_type="nope"), name="bad", timeout=60)


def test_unpriced_instances_have_unknown_cost(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text('{"model": "rm2", "instances": [{"url": "http://a:1", "instance_type": "x9"}]}')
    pf = load_pool_file(path)
    assert pf.instances[0].usd_per_hour is None and math.isnan(pf.cost_per_h)


def test_pool_rejects_unprofiled_types():
    with pytest.raises(InputError, match="unknown instance type 'm9.huge'"):
        start_pool(PoolSpec("m9.huge=1"))  # neither priced nor profiled
    with pytest.raises(InputError, match="unknown instance type 'c5.2xlarge'"):
        start_pool(PoolSpec("c5.2xlarge=1"))  # priced, but not profiled
    with pytest.raises(InputError, match="mode 'gpu': expected one of emulated, onnx"):
        PoolSpec("r5n.large=1", mode="gpu")


def test_onnx_mode_pool(tmp_path):
    spec = PoolSpec("r5n.large=1", model="ncf", mode="onnx", model_dir=tmp_path)
    with start_pool(spec) as pool:
        out = _infer(pool.instances[0].url, "ncf", 8)
        assert out.outputs["prob"].shape == (8, 1) and out.parameters["instance_type"] == "r5n.large"
        assert out.outputs["prob"].any()  # a real model, not zeros
        pids = pool.pids
    assert (tmp_path / "ncf.onnx").exists()
    assert _wait_gone(pids, timeout=0.5) == []


def test_stop_processes_kills_a_child_ignoring_sigterm(tmp_path):
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('READY {}', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    proc.stdout.readline()

    class Wrapped:  # the part of ServerProcess that stop_processes uses
        def __init__(self, p):
            self.proc, self.pid = p, p.pid

        def alive(self):
            return self.proc.poll() is None

        def signal_group(self, sig):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

        def close_stdin(self):
            pass

    t0 = time.monotonic()
    stop_processes([Wrapped(proc)], timeout=0.3)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - t0 < 5


# -- pool files -------------------------------------------------------------------------------------------------
def _write(tmp_path, doc, name="p.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_hand_written_pool_file_defaults(tmp_path):
    path = _write(
        tmp_path,
        {
            "model": "rm2",
            "instances": [
                {"url": "http://10.0.0.5:8000/", "instance_type": "g4dn.xlarge"},
                {"url": "https://gpu.example:443", "instance_type": "g4dn.xlarge", "usd_per_hour": 0.3},
                {"id": "big", "url": "http://10.0.0.6:8000", "instance_type": "c5n.2xlarge"},
            ],
        },
    )
    pf = load_pool_file(path)
    assert [(i.id, i.url, i.usd_per_hour) for i in pf.instances] == [
        ("g4dn.xlarge-0", "http://10.0.0.5:8000", 0.526),
        ("g4dn.xlarge-1", "https://gpu.example:443", 0.3),
        ("big", "http://10.0.0.6:8000", 0.432),
    ]
    assert load_pool_file(path, prices={"g4dn.xlarge": 1.0, "c5n.2xlarge": 2.0}).instances[2].usd_per_hour == 2.0


@pytest.mark.parametrize(
    "doc, match",
    [
        ("{nope", "not a JSON pool file"),
        ([], "expected a JSON object"),
        ({"instances": [{"url": "http://a:1", "instance_type": "r5n.large"}]}, "missing field 'model'"),
        ({"model": "rm2"}, "missing field 'instances'"),
        ({"model": "rm2", "instances": []}, "missing field 'instances'"),
        ({"model": "rm2", "instances": [{"instance_type": "r5n.large"}]}, r"instances\[0\]: missing field 'url'"),
        ({"model": "rm2", "instances": [{"url": "http://a:1"}]}, r"instances\[0\]: missing field 'instance_type'"),
        ({"model": "rm2", "instances": [{"url": "a:1", "instance_type": "r5n.large"}]}, "must start with http"),
        (
            {
                "model": "rm2",
                "instances": [{"url": "http://a:1", "instance_type": "r5n.large", "usd_per_hour": "cheap"}],
            },
            "'usd_per_hour' must be a number",
        ),
        (
            {
                "model": "rm2",
                "instances": [
                    {"id": "a", "url": "http://a:1", "instance_type": "r5n.large"},
                    {"id": "a", "url": "http://b:1", "instance_type": "r5n.large"},
                ],
            },
            "duplicate instance id",
        ),
    ],
)
def test_bad_pool_files_name_file_and_field(tmp_path, doc, match):
    path = _write(tmp_path, doc)
    with pytest.raises(InputError, match=match) as err:
        load_pool_file(path)
    assert str(path) in str(err.value)


def test_missing_pool_file(tmp_path):
    with pytest.raises(InputError, match="no such pool file"):
        load_pool_file(tmp_path / "absent.json")
