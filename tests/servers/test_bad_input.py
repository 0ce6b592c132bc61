"""A client's bad request is a 400 with a JSON error, never a 5xx, and the same 400 from both kinds of server.

The ONNX Runtime model server and an emulated instance validate through the same ``servers.v2.validate_request``, so
every case below is sent to both and must get the same status and the same error text. The dispatcher takes an
instance that answers 5xx out of service: a 500 for a request's own fault (ONNX Runtime refusing an embedding id past
its table) would let one bad client empty a pool, and an emulated pool that accepted such ids (it used to) would hide
the problem from every test run on one.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable

import numpy as np
import orjson
import pandas as pd
import pytest

from servers import models, v2
from servers.emulated import EmulatedConfig
from servers.emulated import create_app as emulated_app
from servers.model_server import ModelServerConfig
from servers.model_server import create_app as model_app

ITYPE = "tiny.x"
LIMIT = 16  # the emulated profile's largest bucket and the model server's max_batch: the same batch limit


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "tiny.parquet"
    rows = [
        {"instance_type": ITYPE, "model": m, "batch_size": b, "compute_ms": 0.5, "load_ms": 0.0}
        for m in models.MODEL_NAMES
        for b in (8, LIMIT)
        for _ in range(3)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def servers(aiohttp_client, model_dir, profile_path) -> Callable:
    """``await servers(model)``: test clients of a model server and an emulated instance serving ``model``."""

    async def make(model: str) -> dict:
        return {
            "onnx": await aiohttp_client(
                model_app(ModelServerConfig(models=(model,), model_dir=model_dir, max_batch=LIMIT))
            ),
            "emulated": await aiohttp_client(emulated_app(EmulatedConfig(ITYPE, model, profiles=profile_path))),
        }

    return make


def _inputs(model: str, batch: int = 3) -> dict[str, np.ndarray]:
    return models.make_inputs(models.get_spec(model), batch, np.random.default_rng(7))


def _enc(x: dict[str, np.ndarray], binary: bool = True) -> tuple[bytes, dict[str, str]]:
    enc = v2.encode_infer_request(x, binary=binary)
    return enc.body, enc.headers


def _with(model: str, name: str, value: np.ndarray | Callable) -> dict[str, np.ndarray]:
    x = _inputs(model)
    x[name] = value(x[name].copy()) if callable(value) else value
    return x


def _set(index, value):
    def change(a):
        a.reshape(-1)[index] = value
        return a

    return change


def _ids(model: str) -> list[models.TensorSpec]:
    return [t for t in models.get_spec(model).inputs if t.high is not None]


def bad_cases(model: str) -> dict[str, tuple[bytes, dict[str, str], str]]:
    """label -> (body, headers, regex the error must match), every one a client's fault."""
    spec = models.get_spec(model)
    cases = {}
    for t in _ids(model):
        top = t.high - 1
        for label, where, value in [
            ("negative", 0, -1),
            ("high", 0, t.high),
            ("huge", 0, 2**62),
            ("int64-min", -1, np.iinfo(np.int64).min),
            ("last-high", -1, t.high),
        ]:
            msg = rf"^input '{t.name}': id {value} outside 0\.\.{top} for model '{model}'$"
            cases[f"{t.name}-{label}"] = (*_enc(_with(model, t.name, _set(where, value))), msg)
        cases[f"{t.name}-high-json"] = (
            *_enc(_with(model, t.name, _set(0, t.high)), binary=False),
            rf"^input '{t.name}': id {t.high} outside 0\.\.{top} for model '{model}'$",
        )
    for t in spec.inputs:
        wrong = np.int32 if t.datatype == "INT64" else np.float64
        cases[f"{t.name}-dtype"] = (
            *_enc(_with(model, t.name, lambda a, wrong=wrong: a.astype(wrong))),
            f"^input '{t.name}': datatype {v2.v2_datatype(wrong)}, model '{model}' expects {t.datatype}$",
        )
        cases[f"{t.name}-shape"] = (
            *_enc(_with(model, t.name, lambda a: np.concatenate([a, a[:, :1]], axis=1))),
            rf"^input '{t.name}': shape \[3, {t.shape[0] + 1}",
        )
        cases[f"{t.name}-rank"] = (*_enc(_with(model, t.name, lambda a: a[..., None])), f"^input '{t.name}': shape")
    first = spec.inputs[0]
    cases["missing-input"] = (*_enc({first.name: _inputs(model)[first.name]}), "^missing input")
    cases["batch-0"] = (*_enc({k: a[:0] for k, a in _inputs(model).items()}), "^batch size 0: nothing to infer$")
    cases["batch-over-limit"] = (*_enc(_inputs(model, LIMIT + 1)), f"batch size {LIMIT + 1} above .* limit {LIMIT}")
    empty_huge = {"name": first.name, "datatype": first.datatype, "shape": [0, 2**40, 2**40, 2**40], "data": []}
    cases["empty-huge-dims"] = (orjson.dumps({"inputs": [empty_huge]}), {}, "cannot be represented")
    deep = {"name": first.name, "datatype": first.datatype, "shape": [0] * 100, "data": []}
    cases["rank-100"] = (orjson.dumps({"inputs": [deep]}), {}, "at most 32")
    head = json.dumps({"inputs": [dict(empty_huge, shape=[0, 2**64], parameters={"binary_data_size": 0})]}).encode()
    cases["dim-past-uint64"] = (head, {v2.HEADER_LENGTH: str(len(head))}, "'shape' must be a list of integers")
    cases["bad-gzip"] = (b"not gzip", {"Content-Encoding": "gzip"}, "^unreadable request body")
    cases["malformed-json"] = (b"{oops", {}, "^malformed JSON")
    return cases


CASES = [(m, label) for m in models.MODEL_NAMES for label in bad_cases(m)]


async def _post(client, model: str, body: bytes, headers: dict[str, str]):
    resp = await client.post(f"/v2/models/{model}/infer", data=body, headers=headers)
    return resp, await resp.read()


@pytest.mark.parametrize("model, label", CASES, ids=[f"{m}-{c}" for m, c in CASES])
async def test_bad_request_is_the_same_400_from_both_servers(servers, model, label):
    body, headers, match = bad_cases(model)[label]
    errors = {}
    for kind, client in (await servers(model)).items():
        resp, raw = await _post(client, model, body, headers)
        assert resp.status == 400, (kind, raw)
        assert resp.content_type == "application/json", kind
        errors[kind] = orjson.loads(raw)["error"]
    assert errors["onnx"] == errors["emulated"]
    assert re.search(match, errors["onnx"]), errors["onnx"]


@pytest.mark.parametrize("model", models.MODEL_NAMES)
async def test_valid_requests_at_the_edges_of_the_id_ranges_are_200(servers, model):
    """Every id 0, every id high - 1 (the last row of each table) and random ids: 200, ONNX outputs finite."""
    spec = models.get_spec(model)
    batches = [_inputs(model, LIMIT)]
    for fill in ("low", "top"):
        x = _inputs(model)
        for t in _ids(model):
            x[t.name] = np.full_like(x[t.name], 0 if fill == "low" else t.high - 1)
        batches.append(x)
    clients = await servers(model)
    for x in batches:
        for binary in (True, False):
            for kind, client in clients.items():
                resp, raw = await _post(client, model, *_enc(x, binary))
                assert resp.status == 200, (kind, raw)
                out = v2.decode_infer_response(raw, resp.headers).outputs[spec.outputs[0].name]
                assert out.shape == (len(next(iter(x.values()))), *spec.outputs[0].shape), kind
                assert np.isfinite(out).all(), kind


async def test_ids_as_other_integer_widths_are_refused_before_their_range(servers):
    """An id tensor in any integer type but the declared INT64 is a datatype error (ORT would refuse it)."""
    clients = await servers("ncf")
    for dt in (np.uint8, np.int16, np.uint32, np.uint64):
        body, headers = _enc(_with("ncf", "user", lambda a, dt=dt: a.astype(dt)))
        for kind, client in clients.items():
            resp, raw = await _post(client, "ncf", body, headers)
            assert resp.status == 400 and b"expects INT64" in raw, (kind, raw)


async def test_non_finite_floats_are_accepted_by_both(servers):
    """NaN and inf are valid V2 tensor data; the models answer NaN, nothing fails (a choice: not validated)."""
    clients = await servers("rm2")
    dense = np.full((3, 13), np.nan, np.float32)
    dense[1] = np.inf
    for kind, client in clients.items():
        resp, raw = await _post(client, "rm2", *_enc(_with("rm2", "dense", dense)))
        assert resp.status == 200, (kind, raw)


async def test_unreadable_body_closes_the_connection_and_the_next_request_is_served(servers):
    """aiohttp drops a connection whose body it could not decode; the 400 says so, so a client does not reuse it."""
    for kind, client in (await servers("rm2")).items():
        resp, _ = await _post(client, "rm2", b"not gzip", {"Content-Encoding": "gzip"})
        assert resp.status == 400 and resp.headers.get("Connection", "").lower() == "close", kind
        resp, raw = await _post(client, "rm2", gzip.compress(_enc(_inputs("rm2"), binary=False)[0]), {})
        assert resp.status == 400, kind  # gzip bytes without the header: not JSON, still a 400
        resp, raw = await _post(client, "rm2", *_enc(_inputs("rm2")))
        assert resp.status == 200, (kind, raw)
        body = gzip.compress(_enc(_inputs("rm2"), binary=False)[0])
        resp, raw = await _post(client, "rm2", body, {"Content-Encoding": "gzip"})
        assert resp.status == 200, (kind, raw)
