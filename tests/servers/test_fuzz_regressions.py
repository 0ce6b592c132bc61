"""What fuzzing the servers found (``test_fuzz_servers.py``), each pinned by the input that showed it.

- JSON floats for an INT64 input were truncated (``1.7`` served as id 1), booleans taken as ids;
- ``/v2/models/{m}/versions/{v}/...`` answered for any version ``v``;
- a body that did not follow its Content-Encoding: for gzip a JSON 400 but a traceback in aiohttp's log, for a deflate
  stream cut short or zstd a plain-text 400 from aiohttp's HTTP parser with a traceback, before the app saw it;
- ``"parameters": []`` (or ``0``, ``""``) passed as no parameters, a non-object output ``parameters`` was ignored.
"""

from __future__ import annotations

import gzip
import logging
import zlib

import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestServer

from harness.core.profiles import Profile
from servers import v2, v2_http
from servers.dispatcher import DispatcherConfig
from servers.dispatcher import create_app as dispatcher_app
from servers.emulated import EmulatedConfig
from servers.emulated import create_app as emulated_app
from servers.model_server import ModelServerConfig
from servers.model_server import create_app as model_app
from servers.pool_file import Instance, PoolFile
from tests.conftest import make_profile_frame

ITYPE = "tiny.x"


@pytest.fixture
def profile() -> Profile:
    frame = make_profile_frame({(ITYPE, m): {16: [0.05, 0.05]} for m in ("ncf", "rm2")})
    return Profile.from_frame(frame, drop_max=False)


@pytest.fixture
async def servers(aiohttp_client, model_dir, profile):
    """``await servers(model)``: clients of a model server, an emulated instance and a dispatcher in front of one."""
    started = []

    async def make(model: str) -> dict:
        backend = TestServer(emulated_app(EmulatedConfig(ITYPE, model), profile), host="127.0.0.1")
        await backend.start_server()
        started.append(backend)
        pool = PoolFile(model, (Instance(f"{ITYPE}-0", str(backend.make_url("")).rstrip("/"), ITYPE, 0.1),))
        return {
            "onnx": await aiohttp_client(model_app(ModelServerConfig(models=(model,), model_dir=model_dir))),
            "emulated": await aiohttp_client(emulated_app(EmulatedConfig(ITYPE, model), profile)),
            "dispatcher": await aiohttp_client(dispatcher_app(DispatcherConfig(pool, qos_ms=500.0), profile)),
        }

    yield make
    for srv in started:
        await srv.close()


def _ncf_json(user_data: list) -> bytes:
    n = len(user_data)
    return orjson.dumps(
        {
            "inputs": [
                {"name": "user", "datatype": "INT64", "shape": [n, 1], "data": user_data},
                {"name": "item", "datatype": "INT64", "shape": [n, 1], "data": [7] * n},
            ]
        }
    )


async def _post(client, path: str, body: bytes, headers: dict | None = None):
    resp = await client.post(path, data=body, headers=headers or {})
    return resp, await resp.read()


@pytest.mark.parametrize(
    "user_data, shown",
    [
        ([1.7, 2], "1.7"),  # was served as id 1
        ([3, 1.0], "1.0"),  # an integral float is still not a JSON integer
        ([1e20], "1e+20"),
        ([True, False], "true"),  # all booleans: was served as ids 1 and 0
        (["3"], '"3"'),  # numpy would parse the string
        ([None], "null"),
        ([2**63], "9223372036854775808"),
    ],
)
async def test_json_values_that_are_not_int64_are_400_naming_the_input_and_value(servers, user_data, shown):
    for kind, client in (await servers("ncf")).items():
        resp, raw = await _post(client, "/v2/models/ncf/infer", _ncf_json(user_data))
        assert resp.status == 400, (kind, raw)
        error = orjson.loads(raw)["error"]
        assert error.startswith(f"input 'user': 'data' value {shown} is not valid INT64"), (kind, error)


@pytest.mark.parametrize(
    "datatype, data, accepted",
    [
        ("FP32", [1, 2.5, -3], True),  # integers are numbers
        ("FP32", [[1.5], [2.5]], True),  # nested as the shape: accepted, as before
        ("FP32", [3.5e38], False),  # beyond FP32: was stored as inf
        ("FP16", [70000.0], False),
        ("FP32", [True], False),
        ("BOOL", [True, False], True),
        ("BOOL", [1, 0], False),
        ("UINT8", [255, 0], True),
        ("UINT8", [256], False),
        ("INT8", [-129], False),
        ("UINT64", [2**64 - 1], True),
        ("UINT64", [-1], False),
        ("INT64", [-(2**63), 2**63 - 1], True),
        ("INT32", [[1, 2], [3]], False),  # ragged
    ],
)
def test_json_data_is_taken_only_as_it_stands(datatype, data, accepted):
    n = int(np.asarray(data, dtype=object).size) if accepted else 1
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": [n], "data": data}]})
    if accepted:
        arr = v2.parse_infer_request(body).inputs["x"]
        assert arr.dtype == v2.numpy_dtype(datatype) and arr.tolist() == np.asarray(data).reshape(-1).tolist()
    else:
        with pytest.raises(v2.V2Error, match=f"^input 'x': 'data' .*not valid {datatype}") as err:
            v2.parse_infer_request(body)
        assert err.value.status == 400


async def test_an_unknown_version_is_404_and_version_1_is_served(servers):
    clients = await servers("ncf")
    body = _ncf_json([1, 2])
    for kind in ("onnx", "emulated"):
        client = clients[kind]
        for path in ("/v2/models/ncf/versions/2/infer", "/v2/models/ncf/versions/latest/infer"):
            resp, raw = await _post(client, path, body)
            assert resp.status == 404 and "unknown version" in orjson.loads(raw)["error"], (kind, path, raw)
        for path in ("/v2/models/ncf/versions/2", "/v2/models/ncf/versions/2/ready"):
            resp = await client.get(path)
            assert resp.status == 404 and "unknown version" in (await resp.json())["error"], (kind, path)
        meta = await (await client.get("/v2/models/ncf")).json()
        assert meta["versions"] == ["1"]
        resp, raw = await _post(client, "/v2/models/ncf/versions/1/infer", body)
        assert resp.status == 200 and orjson.loads(raw)["model_version"] == "1", (kind, raw)
        assert (await client.get("/v2/models/ncf/versions/1/ready")).status == 200
    # The dispatcher serves no versioned path at all: a JSON 404 too.
    resp, raw = await _post(clients["dispatcher"], "/v2/models/ncf/versions/2/infer", body)
    assert resp.status == 404 and "error" in orjson.loads(raw)


@pytest.mark.parametrize(
    "coding, body, status, needle",
    [
        ("gzip", b"not gzip", 400, "unreadable request body: not valid gzip"),
        ("gzip", gzip.compress(_ncf_json([1]))[:-9], 400, "unreadable request body: the gzip stream is cut short"),
        ("gzip", gzip.compress(_ncf_json([1])) + b"junk", 400, "4 byte(s) after the end of the gzip stream"),
        ("deflate", b"x", 400, "unreadable request body: the deflate stream is cut short"),  # was aiohttp's text 400
        ("deflate", zlib.compress(_ncf_json([1]))[:-6], 400, "cut short"),
        ("zstd", b"(\xb5/\xfd", 415, "unsupported Content-Encoding 'zstd'"),  # was aiohttp's text 400
        ("gzip, deflate", _ncf_json([1]), 415, "unsupported Content-Encoding"),
        ("gzip", gzip.compress(b" " * (8 << 20)), 413, "above 1048576 bytes once decoded from gzip"),
    ],
    ids=["not-gzip", "gzip-cut", "gzip-junk-after", "deflate-x", "deflate-cut", "zstd", "two-codings", "gzip-bomb"],
)
async def test_a_body_that_does_not_decode_is_a_json_4xx_and_logs_nothing(
    servers, caplog, coding, body, status, needle
):
    caplog.set_level(logging.WARNING)
    for kind, client in (await servers("ncf")).items():
        resp, raw = await _post(client, "/v2/models/ncf/infer", body, {"Content-Encoding": coding})
        assert resp.status == status and resp.content_type == "application/json", (kind, raw)
        assert needle in orjson.loads(raw)["error"], (kind, raw)
        resp, raw = await _post(client, "/v2/models/ncf/infer", _ncf_json([1]))  # and it serves on
        assert resp.status == 200, (kind, raw)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_every_supported_coding_decodes(servers):
    body = _ncf_json([1, 2])
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    encoded = {
        "gzip": gzip.compress(body),
        "x-gzip": gzip.compress(body),
        "GZip": gzip.compress(body),
        "deflate": zlib.compress(body),
        "identity": body,
        "": body,
    }
    deflated = {"deflate": raw_deflate.compress(body) + raw_deflate.flush()}  # raw deflate, as aiohttp accepted it
    if "br" in v2_http.CODINGS:
        import brotli

        encoded["br"] = brotli.compress(body)
    for kind, client in (await servers("ncf")).items():
        for coding, data in [*encoded.items(), *deflated.items()]:
            resp, raw = await _post(client, "/v2/models/ncf/infer", data, {"Content-Encoding": coding})
            assert resp.status == 200, (kind, coding, raw)


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda d: d.update(parameters=[]), "'parameters' must be an object"),
        (lambda d: d.update(parameters=0), "'parameters' must be an object"),
        (lambda d: d["inputs"][0].update(parameters=""), "'parameters' must be an object"),
        (lambda d: d.update(outputs=[{"name": "prob", "parameters": [1]}]), "outputs[0]: 'parameters' must be"),
    ],
)
def test_parameters_that_are_not_objects_are_400(change, needle):
    doc = orjson.loads(_ncf_json([1]))
    change(doc)
    with pytest.raises(v2.V2Error, match=needle.replace("[", r"\[").replace("]", r"\]")) as err:
        v2.parse_infer_request(orjson.dumps(doc))
    assert err.value.status == 400
