"""The ONNX Runtime model server, in-process: correct outputs, metadata/health, and 4xx JSON errors (never 500).

Bad inputs sent to both kinds of server alike: test_bad_input.py.
"""

import asyncio
import dataclasses

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from harness.core.errors import InputError
from servers import model_server, models, v2
from servers.model_server import BACKEND, ModelServerConfig, choose_providers, create_app


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    models.build_model("rm2", out)
    models.build_model("ncf", out)
    return out


@pytest.fixture
async def client(aiohttp_client, model_dir):
    return await aiohttp_client(create_app(ModelServerConfig(models=("rm2", "ncf"), model_dir=model_dir)))


def _expected(model_dir, name, feeds):
    sess = ort.InferenceSession(str(models.model_path(name, model_dir)), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("binary", [True, False])
async def test_batch_256_rm2_matches_in_process_ort(client, model_dir, binary):
    feeds = models.make_inputs(models.get_spec("rm2"), 256, np.random.default_rng(42))
    enc = v2.encode_infer_request(feeds, binary=binary, binary_output=binary)
    resp = await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers)
    assert resp.status == 200, await resp.text()
    assert (v2.HEADER_LENGTH in resp.headers) == binary
    out = v2.decode_infer_response(await resp.read(), resp.headers)
    assert out.outputs["prob"].shape == (256, 1)
    np.testing.assert_allclose(out.outputs["prob"], _expected(model_dir, "rm2", feeds), rtol=1e-5, atol=1e-6)
    assert out.parameters["queue_ms"] >= 0 and out.parameters["compute_ms"] > 0
    assert out.parameters["batch_size"] == 256


async def test_second_model_and_versioned_route(client, model_dir):
    feeds = models.make_inputs(models.get_spec("ncf"), 3, np.random.default_rng(1))
    enc = v2.encode_infer_request(feeds)
    resp = await client.post("/v2/models/ncf/versions/1/infer", data=enc.body, headers=enc.headers)
    out = v2.decode_infer_response(await resp.read(), resp.headers)
    np.testing.assert_allclose(out.outputs["prob"], _expected(model_dir, "ncf", feeds), rtol=1e-5)


async def test_metadata_and_health(client):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/rm2/ready"):
        assert (await client.get(path)).status == 200
    meta = await (await client.get("/v2/models/rm2")).json()
    assert meta["name"] == "rm2" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "dense", "datatype": "FP32", "shape": [-1, 13]},
        {"name": "sparse", "datatype": "INT64", "shape": [-1, 8, 8]},
    ]
    assert meta["outputs"] == [{"name": "prob", "datatype": "FP32", "shape": [-1, 1]}]
    assert (await (await client.get("/v2")).json())["extensions"] == ["binary_tensor_data"]


async def _error(resp, status):
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


def _rm2(batch, **changes):
    x = models.make_inputs(models.get_spec("rm2"), batch, np.random.default_rng(0))
    x.update(changes)
    return v2.encode_infer_request(x)


async def test_bad_requests_are_4xx_json(client):
    assert "unknown model 'nope'" in await _error(await client.get("/v2/models/nope"), 404)
    assert "unknown model" in await _error(await client.get("/v2/models/nope/ready"), 404)
    enc = _rm2(2)
    assert "unknown model" in await _error(
        await client.post("/v2/models/nope/infer", data=enc.body, headers=enc.headers), 404
    )
    assert "malformed JSON" in await _error(await client.post("/v2/models/rm2/infer", data=b"{oops"), 400)
    enc = _rm2(2, dense=np.zeros((2, 13), np.float64))
    assert "datatype FP64" in await _error(
        await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 400
    )
    enc = _rm2(2, sparse=np.zeros((2, 8, 7), np.int64))
    assert "shape [2, 8, 7]" in await _error(
        await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 400
    )
    enc = _rm2(1001)
    assert "above this server's limit 1000" in await _error(
        await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 400
    )
    body = orjson.dumps({"inputs": [{"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [1] * 13}]})
    assert "missing input 'sparse'" in await _error(await client.post("/v2/models/rm2/infer", data=body), 400)
    for value in (-1, 10_000, 2**62):  # ORT wraps -1 round to the last row, answered 500 for the others
        sparse = models.make_inputs(models.get_spec("rm2"), 2, np.random.default_rng(0))["sparse"]
        sparse[1, 7, 7] = value
        enc = _rm2(2, sparse=sparse)
        assert f"input 'sparse': id {value} outside 0..9999 for model 'rm2'" == await _error(
            await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 400
        )
    x = models.make_inputs(models.get_spec("ncf"), 2, np.random.default_rng(0))
    x["item"][0, 0] = 10_000
    enc = v2.encode_infer_request(x)
    assert "input 'item': id 10000 outside 0..9999 for model 'ncf'" == await _error(
        await client.post("/v2/models/ncf/infer", data=enc.body, headers=enc.headers), 400
    )
    await _error(await client.get("/v2/models/rm2/infer"), 405)
    await _error(await client.get("/nowhere"), 404)


async def test_input_ort_refuses_is_400_and_other_ort_errors_500(client, capsys):
    """Behind validation, ORT's InvalidArgument (the input's fault) is still a 400; its other errors stay 500."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    backend = client.server.app[BACKEND]
    loaded = backend.models["rm2"]
    unchecked = tuple(dataclasses.replace(t, high=None) for t in loaded.meta.inputs)
    loaded.meta = dataclasses.replace(loaded.meta, inputs=unchecked)  # a validation gap: ids reach ORT unchecked
    sparse = models.make_inputs(models.get_spec("rm2"), 2, np.random.default_rng(0))["sparse"]
    sparse[0, 0, 0] = 10_000
    enc = _rm2(2, sparse=sparse)
    for _ in range(2):
        message = await _error(await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 400)
        assert message.startswith("model 'rm2' rejected the input: ") and "out of data bounds" in message
    assert capsys.readouterr().err.count("validation let through") == 1  # warned once per model

    class Broken:
        def run(self, *args):
            raise Fail("[ONNXRuntimeError] : 1 : FAIL : something inside broke")

    loaded.session = Broken()
    enc = _rm2(2)
    assert "internal error: Fail" in await _error(
        await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 500
    )
    assert model_server.is_input_error(ValueError("x")) is False


async def test_not_ready_is_503(client):
    client.server.app[BACKEND].semaphore = None  # as while shutting down
    enc = _rm2(2)
    assert "not ready" in await _error(
        await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 503
    )


async def test_oversized_body_is_413(aiohttp_client, model_dir):
    cfg = ModelServerConfig(models=("rm2",), model_dir=model_dir, max_batch=4, client_max_size=100_000)
    client = await aiohttp_client(create_app(cfg))
    enc = _rm2(4)
    assert (await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers)).status == 200
    enc = _rm2(300)
    assert len(enc.body) > 100_000
    assert "too large" in await _error(
        await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers), 413
    )


async def test_default_body_limit_fits_batch_1000_as_json(client):
    x = models.make_inputs(models.get_spec("rm2"), 1000, np.random.default_rng(0))
    enc = v2.encode_infer_request(x, binary=False, binary_output=False)
    resp = await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers)
    assert resp.status == 200
    assert len((await resp.json())["outputs"][0]["data"]) == 1000


async def test_one_inference_at_a_time_by_default(client):
    enc = _rm2(1000)

    async def one():
        resp = await client.post("/v2/models/rm2/infer", data=enc.body, headers=enc.headers)
        return v2.decode_infer_response(await resp.read(), resp.headers).parameters

    params = await asyncio.gather(*(one() for _ in range(4)))
    # with concurrency 1 the later requests waited for the earlier ones: queue time builds up
    queues = sorted(p["queue_ms"] for p in params)
    computes = [p["compute_ms"] for p in params]
    assert queues[0] < 1.0
    assert queues[-1] >= 0.9 * sum(sorted(computes)[:2])


def test_config_validation_and_cuda_fallback(capsys):
    with pytest.raises(InputError, match="unknown model"):
        ModelServerConfig(models=("bogus",))
    with pytest.raises(InputError, match="^threads "):
        ModelServerConfig(threads=0)
    with pytest.raises(InputError, match="^provider "):
        ModelServerConfig(provider="tpu")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert choose_providers("cuda") == ["CPUExecutionProvider"]
        assert "falling back to CPU" in capsys.readouterr().err
    assert choose_providers("cpu") == ["CPUExecutionProvider"]


def test_a_cuda_provider_that_falls_back_to_the_cpu_is_refused(model_dir, monkeypatch, capsys):
    # onnxruntime-gpu lists CUDA wherever it is installed; where a CUDA library is missing it logs that and runs the
    # session on the CPU (onnxruntime#23372). Here the CPU build stands in: it too builds a CPU session when asked
    # for CUDA first.
    from harness.cli import main

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    preloaded = []
    monkeypatch.setattr(
        ort, "preload_dlls", lambda: preloaded.append(print("Failed to load libcublasLt.so.13")), raising=False
    )
    providers = choose_providers("cuda")
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"] and len(preloaded) == 1
    out = capsys.readouterr()
    assert "libcublasLt.so.13" in out.err and "libcublasLt" not in out.out  # stdout carries only the READY line
    with pytest.warns(UserWarning), pytest.raises(InputError, match="fell back to CPUExecutionProvider") as caught:
        model_server.load_session(models.model_path("rm2", model_dir), providers, 1)
    assert caught.value.field == "provider" and "onnxruntime-gpu[cuda,cudnn]" in str(caught.value)
    assert choose_providers("cpu") == ["CPUExecutionProvider"] and len(preloaded) == 1  # CUDA's libraries only for it
    # The server refuses to start, in one line, instead of serving from the CPU under a GPU name.
    argv = ["serve", "model", "--model", "rm2", "--model-dir", str(model_dir), "--provider", "cuda"]
    with pytest.warns(UserWarning):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "kairos serve: error: --provider cuda: ONNX Runtime" in err and "could not start it" in err
