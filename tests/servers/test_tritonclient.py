"""tritonclient.http (sync) against real server processes: the model server, an emulated instance, the dispatcher."""

import numpy as np
import onnxruntime as ort
import pytest

from servers import models
from servers.dispatcher import DispatcherConfig
from servers.emulated import EmulatedConfig
from servers.model_server import ModelServerConfig
from servers.pool_file import load_pool_file
from servers.process import spawn_server, stop_processes

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow  # whole stacks or long searches: left out of the quick loop


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    models.build_model("rm2", out)
    return out


@pytest.fixture(scope="module")
def model_server(model_dir):
    proc = spawn_server("model", ModelServerConfig(models=("rm2",), model_dir=model_dir), name="ort")
    yield proc
    stop_processes([proc])


@pytest.fixture(scope="module")
def emulated_server():
    proc = spawn_server("emulated", EmulatedConfig(instance_type="g4dn.xlarge", model="rm2"), name="emu")
    yield proc
    stop_processes([proc])


def _client(proc):
    return httpclient.InferenceServerClient(url=proc.url.removeprefix("http://"), network_timeout=30)


def _inputs(feeds, binary=True):
    out = []
    for name, arr in feeds.items():
        inp = httpclient.InferInput(name, list(arr.shape), "FP32" if arr.dtype == np.float32 else "INT64")
        inp.set_data_from_numpy(arr, binary_data=binary)
        out.append(inp)
    return out


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_against_model_server(model_server, model_dir, binary):
    client = _client(model_server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("rm2")
    meta = client.get_model_metadata("rm2")
    assert meta["platform"] == "onnxruntime_onnx" and meta["inputs"][1]["shape"] == [-1, 8, 8]
    feeds = models.make_inputs(models.get_spec("rm2"), 256, np.random.default_rng(7))
    outputs = None if binary else [httpclient.InferRequestedOutput("prob", binary_data=False)]
    result = client.infer("rm2", _inputs(feeds, binary), outputs=outputs)
    prob = result.as_numpy("prob")
    assert prob.shape == (256, 1)
    sess = ort.InferenceSession(str(models.model_path("rm2", model_dir)), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(prob, sess.run(None, feeds)[0], rtol=1e-5, atol=1e-6)
    params = result.get_response()["parameters"]
    assert params["compute_ms"] > 0 and params["queue_ms"] >= 0


def test_tritonclient_errors_are_readable(model_server):
    client = _client(model_server)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
    feeds = models.make_inputs(models.get_spec("rm2"), 2, np.random.default_rng(0))
    feeds["dense"] = feeds["dense"][:, :12].copy()
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("rm2", _inputs(feeds))


def test_tritonclient_against_emulated_instance(emulated_server):
    client = _client(emulated_server)
    assert client.is_server_ready() and client.is_model_ready("rm2")
    feeds = models.make_inputs(models.get_spec("rm2"), 100, np.random.default_rng(1))
    result = client.infer("rm2", _inputs(feeds))
    assert result.as_numpy("prob").shape == (100, 1)
    params = result.get_response()["parameters"]
    assert params["instance_type"] == "g4dn.xlarge"
    assert params["compute_ms"] >= params["sampled_ms"] - 0.1 > 0


@pytest.fixture(scope="module")
def dispatcher_server(model_server, emulated_server, tmp_path_factory):
    """A real dispatcher process in front of the ORT server and the emulated instance."""
    import json

    pool = tmp_path_factory.mktemp("pool") / "pool.json"
    pool.write_text(
        json.dumps(
            {
                "model": "rm2",
                "instances": [
                    {"id": "gpu-0", "url": model_server.url, "instance_type": "g4dn.xlarge"},
                    {"id": "cpu-0", "url": emulated_server.url, "instance_type": "r5n.large"},
                ],
            }
        )
    )
    proc = spawn_server("dispatcher", DispatcherConfig(pool=load_pool_file(pool), policy="kairos"), name="dispatcher")
    yield proc
    stop_processes([proc])


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_through_the_dispatcher(dispatcher_server, binary):
    client = _client(dispatcher_server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("rm2")
    assert {t["name"] for t in client.get_model_metadata("rm2")["inputs"]} == {"dense", "sparse"}
    feeds = models.make_inputs(models.get_spec("rm2"), 64, np.random.default_rng(3))
    outputs = None if binary else [httpclient.InferRequestedOutput("prob", binary_data=False)]
    for _ in range(3):
        result = client.infer("rm2", _inputs(feeds, binary), outputs=outputs)
        assert result.as_numpy("prob").shape == (64, 1)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("bert", _inputs(feeds))
