"""The CUDA execution provider: a `cuda` instance really runs on the GPU, and a GPU + CPU pool is profiled.

Skipped, with the reason, where ONNX Runtime has no CUDA provider (the CPU wheel) or the machine shows no NVIDIA GPU
(onnxruntime-gpu lists the provider wherever it is installed). Where a GPU is there, they run: a CUDA library missing
then fails them, as the server refuses to start, rather than hiding behind a skip.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.core.profiles import Profile
from harness.live.local_profile import LocalProfileConfig, local_profile, pool_settings
from servers import models, v2
from servers.model_server import BACKEND, ModelServerConfig, create_app
from servers.pool import PoolSpec, start_pool

ort = pytest.importorskip("onnxruntime")


def no_gpu_reason() -> str:
    """Why these tests cannot run here ('' where they can)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider: install the gpu extra on a machine with an NVIDIA GPU"
    if not (Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi")):
        return "onnxruntime-gpu is installed, but this machine shows no NVIDIA GPU (no /dev/nvidiactl, no nvidia-smi)"
    return ""


NO_GPU = no_gpu_reason()
pytestmark = pytest.mark.skipif(bool(NO_GPU), reason=NO_GPU or "a GPU is here")


async def test_a_cuda_server_runs_its_session_on_the_gpu(aiohttp_client, tmp_path):
    app = create_app(ModelServerConfig(models=("rm2",), model_dir=tmp_path, provider="cuda"))
    client = await aiohttp_client(app)
    enc = v2.encode_infer_request(models.make_inputs(models.get_spec("rm2"), 100, np.random.default_rng(0)))
    resp = await client.post("/v2/models/rm2/infer", data=enc.body, headers=dict(enc.headers))
    assert resp.status == 200, await resp.text()
    assert app[BACKEND].models["rm2"].session.get_providers()[0] == "CUDAExecutionProvider"


def test_a_gpu_and_cpu_pool_is_profiled_per_type(tmp_path):
    spec = PoolSpec("cuda=1,cpu-1t=1", model="rm2", mode="onnx", model_dir=tmp_path / "models")
    with start_pool(spec) as pool:
        settings = pool_settings(pool)
        config = LocalProfileConfig(contention="alone", samples=5, warmup=2, cache_dir=tmp_path / "cache")
        info = local_profile(list(pool.instances), settings, "rm2", 1000, tmp_path / "p.parquet", config)
    profile = Profile.load(info["path"])
    assert set(profile.instance_types) == {"cuda", "cpu-1t"}
    # at batch 1000 a GPU server must beat one CPU thread, or the pool is not heterogeneous the way it says
    assert profile.mean_ms("cuda", "rm2", 1000) < profile.mean_ms("cpu-1t", "rm2", 1000)
