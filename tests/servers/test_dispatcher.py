"""The dispatcher proxy in-process in front of real (in-process) emulated instances on loopback ports."""

import asyncio

import aiohttp.test_utils
import numpy as np
import pytest
from aiohttp import web

from servers import models, v2
from servers.admin_auth import is_loopback
from servers.dispatcher import DISPATCHER, DispatcherConfig, create_app
from servers.dispatcher.front import FrontSite
from servers.pool_file import PoolFile


@pytest.fixture(autouse=True, params=["aiohttp", "front"])
def server_side(request, monkeypatch):
    """Every test here runs twice: infer served by aiohttp's route, and by the lean front a served process uses."""
    if request.param == "front":

        def site(runner, sock, **kw):
            return (FrontSite if DISPATCHER in runner.app else web.SockSite)(runner, sock, **kw)

        monkeypatch.setattr(aiohttp.test_utils, "SockSite", site)
    return request.param


async def dispatcher(aiohttp_client, profile, started, **kw):
    pool = PoolFile("rm2", tuple(i for i, _ in started))
    return await aiohttp_client(create_app(DispatcherConfig(pool, qos_ms=kw.pop("qos_ms", 500.0), **kw), profile))


def request(batch):
    return v2.encode_infer_request(models.make_inputs(models.get_spec("rm2"), batch, np.random.default_rng(0)))


async def infer(client, batch, rid=None):
    enc = request(batch)
    headers = dict(enc.headers)
    if rid:
        headers["X-Request-ID"] = rid
    return await client.post("/v2/models/rm2/infer", data=enc.body, headers=headers)


async def test_forwards_bytes_and_records_each_query(aiohttp_client, profile, backends, tmp_path):
    started = await backends("fast", "slow")
    client = await dispatcher(aiohttp_client, profile, started, policy="kairos", records_path=tmp_path / "r.parquet")
    resp = await infer(client, 50, rid="q-1")
    assert resp.status == 200
    out = v2.decode_infer_response(await resp.read(), resp.headers)
    assert out.outputs["prob"].shape == (50, 1)
    assert resp.headers["X-Kairos-Instance"] in ("fast-0", "slow-1")
    d = client.server.app[DISPATCHER]
    rows = d.sink.frame()
    assert rows["request_id"].tolist() == ["q-1"] and rows["status"].tolist() == ["ok"]
    r = rows.iloc[0]
    assert r.arrival_s <= r.dispatch_s <= r.start_s < r.finish_s and r.policy == "kairos"


async def test_kairos_sends_large_queries_to_the_fast_instance(aiohttp_client, profile, backends):
    started = await backends("fast", "slow")
    client = await dispatcher(aiohttp_client, profile, started, policy="kairos", qos_ms=300.0)
    tasks = []
    for b in (1000, 1000, 50):  # the second large query waits for the busy fast instance; the small one goes slow
        tasks.append(asyncio.create_task(infer(client, b)))
        await asyncio.sleep(0.005)
    assert [r.status for r in await asyncio.gather(*tasks)] == [200] * 3
    rows = client.server.app[DISPATCHER].sink.frame()
    assert set(rows.loc[rows.batch_size == 1000, "instance_type"]) == {"fast"}
    assert rows.loc[rows.batch_size == 50, "instance_type"].tolist() == ["slow"]


async def test_policy_switch_between_phases(aiohttp_client, profile, backends):
    started = await backends("fast", "slow")
    client = await dispatcher(aiohttp_client, profile, started, policy="kairos")
    resp = await client.post("/admin/policy", json={"policy": "least_outstanding"})
    assert (await resp.json())["policy"] == "least_outstanding"
    assert (await infer(client, 10)).status == 200
    drained = await (await client.post("/admin/drain?timeout_s=5")).json()
    assert drained["drained"] and drained["records"] == 1
    assert (await infer(client, 10, rid="p2-7")).status == 200
    cols = await (await client.get("/admin/records?prefix=p2-")).json()
    assert cols["request_id"] == ["p2-7"] and cols["status"] == ["ok"]
    assert client.server.app[DISPATCHER].sink.frame()["policy"].tolist() == ["least_outstanding"] * 2
    resp = await client.post("/admin/policy", json={"policy": "nope"})
    assert resp.status == 400 and "unknown policy" in (await resp.json())["error"]


@pytest.mark.parametrize(
    "body, headers, status, needle",
    [
        (b"{not json", {}, 400, "malformed JSON"),
        (b'{"inputs": []}', {}, 400, "non-empty 'inputs'"),
        (b'{"inputs": [{"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []}]}', {}, 400, "batch size >= 1"),
        (b'{"inputs": [{"name": "x", "shape": [2000, 3], "datatype": "FP32", "data": []}]}', {}, 400, "above the pool"),
        (b"{}", {v2.HEADER_LENGTH: "99"}, 400, "does not fit"),
    ],
)
async def test_bad_input_is_4xx_json(aiohttp_client, profile, backends, body, headers, status, needle):
    started = await backends("fast")
    client = await dispatcher(aiohttp_client, profile, started)
    resp = await client.post("/v2/models/rm2/infer", data=body, headers=headers)
    assert resp.status == status and needle in (await resp.json())["error"]


async def test_unknown_model_404_and_backend_400_passes_through(aiohttp_client, profile, backends):
    started = await backends("fast")
    client = await dispatcher(aiohttp_client, profile, started)
    resp = await client.post("/v2/models/bert/infer", data=request(5).body, headers=request(5).headers)
    assert resp.status == 404 and "unknown model" in (await resp.json())["error"]
    wrong = b'{"inputs": [{"name": "dense", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}'
    resp = await client.post("/v2/models/rm2/infer", data=wrong)
    assert resp.status == 400 and "error" in await resp.json()
    rows = client.server.app[DISPATCHER].sink.frame()
    assert rows["status"].tolist() == ["failed"] and rows["http_status"].tolist() == [400]


async def test_json_fault_past_the_batch_size_is_the_servers_4xx_and_recorded(aiohttp_client, profile, backends):
    """The dispatcher reads a JSON request only up to its batch size; a fault behind it comes back as the instance's
    4xx JSON error, and the query is recorded."""
    started = await backends("fast")
    client = await dispatcher(aiohttp_client, profile, started)
    body = v2.encode_infer_request(
        models.make_inputs(models.get_spec("rm2"), 5, np.random.default_rng(0)), binary=False
    )
    resp = await client.post("/v2/models/rm2/infer", data=body.body[:-40], headers=body.headers)
    assert resp.status == 400 and "malformed JSON" in (await resp.json())["error"]
    rows = client.server.app[DISPATCHER].sink.frame()
    assert rows["http_status"].tolist() == [400] and rows["batch_size"].tolist() == [5]
    assert rows["instance_id"].tolist() == ["fast-0"]


async def test_full_queue_sheds_with_503_and_records(aiohttp_client, profile, backends):
    started = await backends("slow")
    client = await dispatcher(aiohttp_client, profile, started, policy="fcfs", max_queue=1)
    resps = await asyncio.gather(*(infer(client, 10) for _ in range(5)))
    codes = sorted(r.status for r in resps)
    assert codes.count(503) >= 2 and codes.count(200) >= 2
    rows = client.server.app[DISPATCHER].sink.frame()
    assert len(rows) == 5 and (rows["status"] == "shed").sum() == codes.count(503)


async def test_metrics_and_metadata(aiohttp_client, profile, backends):
    started = await backends("fast", "slow")
    client = await dispatcher(aiohttp_client, profile, started, policy="fcfs")
    await infer(client, 10)
    text = await (await client.get("/metrics")).text()
    assert 'kairos_requests_total{policy="fcfs",status="ok"} 1' in text
    assert 'kairos_instance_busy{instance="fast-0",type="fast"} 0' in text
    assert 'kairos_latency_ms_count{policy="fcfs"} 1' in text and "kairos_queue_length 0" in text
    meta = await (await client.get("/v2/models/rm2")).json()
    assert {t["name"] for t in meta["inputs"]} == {t.name for t in models.get_spec("rm2").inputs}
    assert (await client.get("/v2/health/ready")).status == 200


async def test_killed_backend_queries_retry_elsewhere_each_recorded_once(aiohttp_client, profile, backends):
    started = await backends("fast", "fast")
    client = await dispatcher(aiohttp_client, profile, started, policy="round_robin", health_interval_s=0.05)
    d = client.server.app[DISPATCHER]
    tasks = [asyncio.create_task(infer(client, 1000, rid=f"q{k}")) for k in range(12)]  # 40 ms each
    await asyncio.sleep(0.06)
    await started[0][1].close()  # instance fast-0 dies with queries in flight and queued
    codes = [r.status for r in await asyncio.gather(*tasks)]
    assert codes == [200] * 12
    rows = d.sink.frame()
    assert len(rows) == 12 and rows["request_id"].is_unique and set(rows["status"]) == {"ok"}
    assert (rows["attempts"] == 2).any() and not d.instances[0].alive
    assert (await infer(client, 10)).status == 200  # keeps serving with the rest


def test_peek_batch_reads_only_the_header():
    enc = request(33)
    assert v2.peek_batch(enc.body, enc.headers[v2.HEADER_LENGTH]) == 33


def test_admin_guard_loopback_rule():
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("10.0.0.2") and not is_loopback(None)


@pytest.mark.parametrize("prefetch_ms", [0.0, 20.0])
async def test_prefetch_sends_the_next_query_before_the_instance_frees(aiohttp_client, profile, backends, prefetch_ms):
    started = await backends("fast")  # batch 1000: 40 ms each
    client = await dispatcher(aiohttp_client, profile, started, policy="kairos", prefetch_ms=prefetch_ms)
    first = asyncio.create_task(infer(client, 1000, rid="a"))
    await asyncio.sleep(0.005)
    assert (await infer(client, 1000, rid="b")).status == 200
    assert (await first).status == 200
    rows = client.server.app[DISPATCHER].sink.frame().set_index("request_id")
    a, b = rows.loc["a"], rows.loc["b"]
    if prefetch_ms:
        assert b.dispatch_s < a.finish_s - 0.010  # sent about 20 ms before the first query's end
    else:
        assert b.dispatch_s >= a.finish_s
    # Either way b's service is counted from when the instance could start it.
    assert b.start_s >= a.finish_s - 1e-6
    assert 35.0 <= b.service_ms <= 60.0


def test_prefetch_needs_a_sane_value(profile):
    with pytest.raises(Exception, match="^prefetch ms -1.0: must be >= 0"):
        DispatcherConfig(PoolFile("rm2", ()), prefetch_ms=-1.0)
