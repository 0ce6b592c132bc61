"""Faults on demand: spikes, stalls, errors and exits, in the emulated instance and the ONNX model server alike."""

import asyncio
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

from harness.core.errors import InputError
from servers import models, v2
from servers.emulated import EmulatedConfig
from servers.emulated import create_app as emulated_app
from servers.faults import Fault, parse_fault
from servers.model_server import ModelServerConfig
from servers.model_server import create_app as model_app
from servers.process import spawn_server, stop_processes


@pytest.fixture
def fixed10(tmp_path):
    """A profile where every rm2 batch on tiny.x takes 10 ms."""
    path = tmp_path / "fixed.parquet"
    rows = [
        {"instance_type": "tiny.x", "model": "rm2", "batch_size": b, "compute_ms": 10.0, "load_ms": 0.0}
        for b in (10, 20)
        for _ in range(5)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def _req(batch=10, model="rm2"):
    return v2.encode_infer_request(models.make_inputs(models.get_spec(model), batch, np.random.default_rng(0)))


async def _timed(client, enc=None, model="rm2"):
    enc = enc or _req(model=model)
    t0 = time.perf_counter()
    resp = await client.post(f"/v2/models/{model}/infer", data=enc.body, headers=enc.headers)
    body = await resp.read()
    ms = (time.perf_counter() - t0) * 1e3
    return resp.status, ms, v2.decode_infer_response(body, resp.headers) if resp.status == 200 else body


def test_parse_fault_forms_and_errors():
    assert parse_fault("spike@10s:5s:200ms") == Fault("spike", 10.0, 5.0, 200.0)
    assert parse_fault("stall@45s:5s") == Fault("stall", 45.0, 5.0)
    assert parse_fault("error@500ms:1m:503") == Fault("error", 0.5, 60.0, status=503)
    assert parse_fault("exit@30") == Fault("exit", 30.0)
    for bad, words in [
        ("boom@1s", "expected one of spike, stall, error, exit"),
        ("stall@1s", "needs a duration"),
        ("spike@x", "expected a time"),
        ("error@1:2:404", "5xx"),
        ("stall@1:2:3", "takes a size"),
    ]:
        with pytest.raises(InputError, match=words) as err:
            parse_fault(bad, field_name="fault")
        assert err.value.field == "fault"


async def test_emulated_spike_lengthens_service_then_ends(aiohttp_client, fixed10):
    app = emulated_app(EmulatedConfig("tiny.x", profiles=fixed10, faults=(Fault("spike", 0.0, 0.4, 80.0),)))
    client = await aiohttp_client(app)
    status, during_ms, body = await _timed(client)
    assert status == 200
    assert during_ms >= 85, during_ms  # 10 ms sampled + 80 ms injected
    assert body.parameters["compute_ms"] >= 85
    await asyncio.sleep(0.45)
    status, after_ms, _ = await _timed(client)
    assert status == 200 and after_ms < 60, after_ms


async def test_emulated_error_window_answers_json_5xx_and_health_stays_ready(aiohttp_client, fixed10):
    client = await aiohttp_client(
        emulated_app(EmulatedConfig("tiny.x", profiles=fixed10, faults=(Fault("error", 0.0, 0.3, status=503),)))
    )
    resp = await client.post("/v2/models/rm2/infer", data=_req().body, headers=_req().headers)
    assert resp.status == 503 and "injected" in (await resp.json())["error"]
    assert (await client.get("/v2/health/ready")).status == 200
    await asyncio.sleep(0.35)
    assert (await _timed(client))[0] == 200


async def test_emulated_stall_holds_requests_until_it_ends(aiohttp_client, fixed10):
    client = await aiohttp_client(
        emulated_app(EmulatedConfig("tiny.x", profiles=fixed10, faults=(Fault("stall", 0.0, 0.3),)))
    )
    t0 = time.perf_counter()
    ready = await client.get("/v2/health/ready")
    assert ready.status == 200 and time.perf_counter() - t0 >= 0.25  # health stalls too: the whole server hangs
    status, ms, _ = await _timed(client)
    assert status == 200 and ms < 60  # the stall is over


async def test_admin_fault_endpoint_only_when_accepted(aiohttp_client, fixed10):
    off = await aiohttp_client(emulated_app(EmulatedConfig("tiny.x", profiles=fixed10)))
    assert (await off.post("/admin/fault", json={"kind": "exit"})).status == 404  # no route: cannot be asked
    on = await aiohttp_client(emulated_app(EmulatedConfig("tiny.x", profiles=fixed10, accept_faults=True)))
    resp = await on.post("/admin/fault", json={"kind": "error", "duration_s": 0.3})
    doc = await resp.json()
    assert resp.status == 200 and doc["kind"] == "error" and doc["end_epoch"] > doc["start_epoch"]
    assert (await _timed(on))[0] == 500
    listed = await (await on.get("/admin/faults")).json()
    assert [f["kind"] for f in listed["faults"]] == ["error"]
    for bad in ({"kind": "melt"}, {"kind": "stall"}, {"kind": "spike", "duration_s": 1, "bogus": 1}, [1]):
        resp = await on.post("/admin/fault", json=bad)
        assert resp.status == 400 and "error" in await resp.json()
    resp = await on.post("/admin/fault", data=b"{not json")
    assert resp.status == 400


async def test_model_server_takes_the_same_faults(aiohttp_client, model_dir):
    config = ModelServerConfig(models=("ncf",), model_dir=model_dir, faults=(Fault("spike", 0.0, 0.5, 100.0),))
    client = await aiohttp_client(model_app(config))
    status, ms, body = await _timed(client, _req(model="ncf"), model="ncf")
    assert status == 200 and ms >= 100
    assert body.parameters["compute_ms"] >= 100
    resp = await client.post("/admin/fault", json={"kind": "error", "duration_s": 1})
    assert resp.status == 404  # not accepted unless configured


@pytest.mark.slow
def test_exit_fault_ends_the_process_like_a_crash(fixed10):
    proc = spawn_server("emulated", EmulatedConfig("tiny.x", profiles=fixed10, accept_faults=True), name="victim")
    try:
        req = urllib.request.Request(
            proc.url + "/admin/fault",
            data=b'{"kind": "exit", "at_s": 0.2}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        assert proc.proc.wait(timeout=10) == 1
    finally:
        stop_processes([proc])


def test_cli_rejects_a_bad_fault_naming_the_option():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "serve",
            "emulated",
            "--instance-type",
            "r5n.large",
            "--fault",
            "melt@1s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--fault" in out.stderr and "melt" in out.stderr, out.stderr
