"""Pinning ONNX Runtime servers to cores of their own: the plan, the pinning of every thread, the pool that uses it."""

import os

import numpy as np
import pytest

from harness.core.errors import InputError
from servers import cpu_affinity, models, v2
from servers.cpu_affinity import (
    Pinning,
    available_cpus,
    format_cpus,
    parse_cpus,
    pin_process,
    plan_pinning,
    thread_cpus,
)
from servers.model_server import ModelServerConfig, create_app
from servers.pool import PoolSpec, start_pool

two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores this process may use")


def test_each_server_gets_its_own_cores_from_the_top_and_the_harness_the_rest():
    assert plan_pinning([1], (0, 1)) == Pinning(((1,),), (0,))
    assert plan_pinning([2, 1], (0, 1, 2, 3)) == Pinning(((2, 3), (1,)), (0,))
    assert plan_pinning([1, 1], tuple(range(8))) == Pinning(((7,), (6,)), (0, 1, 2, 3, 4, 5))
    assert plan_pinning([1], (0, 2, 5)) == Pinning(((5,),), (0, 2))  # the cores this process may use, gaps and all
    assert plan_pinning([1, 1], (0, 1, 2)).to_json() == {"servers": ["2", "1"], "harness": "0"}


def test_servers_that_would_leave_the_harness_no_core_are_refused_with_the_numbers():
    with pytest.raises(InputError) as err:
        plan_pinning([2], (0, 1))
    assert err.value.field == "pin_cores"
    assert err.value.message == (
        "needs 3 cores: 2 for the servers (threads x concurrency each) and 1 or more for the dispatcher and load "
        "generator; this process may run on 2 (0-1)"
    )
    with pytest.raises(InputError):
        plan_pinning([1, 1], (0, 1))


def test_core_lists_read_and_print_in_the_kernels_format():
    assert format_cpus((0, 1, 2, 3, 6)) == "0-3,6"
    assert format_cpus((5,)) == "5" and format_cpus((3, 1)) == "1,3"
    assert parse_cpus("0-3,6") == (0, 1, 2, 3, 6) and parse_cpus("2") == (2,) and parse_cpus("1, 1") == (1,)
    for bad in ("", "a", "3-1", "-1", "1-x"):
        with pytest.raises(InputError, match="expected core numbers") as err:
            parse_cpus(bad, "cpus")
        assert err.value.field == "cpus"


def test_a_model_server_config_names_cores_once_each():
    assert ModelServerConfig(cpus=(1, 0)).cpus == (1, 0)
    for bad in ((-1,), (1, 1), (True,), ("1",)):
        with pytest.raises(InputError) as err:
            ModelServerConfig(cpus=bad)
        assert err.value.field == "cpus"


@two_cores
def test_pinning_this_process_covers_every_thread_and_gives_back_what_it_had():
    import threading

    started, release = threading.Event(), threading.Event()
    helper = threading.Thread(target=lambda: (started.set(), release.wait(10)), daemon=True)
    helper.start()
    started.wait(5)
    before = available_cpus()
    try:
        had = pin_process((before[-1],))
        assert had == before
        assert set(thread_cpus(os.getpid()).values()) == {(before[-1],)}  # the helper thread too, not only the caller
    finally:
        pin_process(before)
        release.set()
    assert set(thread_cpus(os.getpid()).values()) == {before}
    with pytest.raises(InputError, match="cannot pin to these cores") as err:
        pin_process((max(before) + 4096,))
    assert err.value.field == "cpus"
    assert available_cpus() == before


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    models.build_model("ncf", out)
    return out


@two_cores
async def test_an_in_process_server_computes_on_its_cores_and_leaves_the_process_as_it_was(aiohttp_client, model_dir):
    before = available_cpus()
    core = before[-1]
    client = await aiohttp_client(create_app(ModelServerConfig(models=("ncf",), model_dir=model_dir, cpus=(core,))))
    assert set(thread_cpus(os.getpid()).values()) == {(core,)}  # ORT's threads, started after, inherit it
    enc = v2.encode_infer_request(models.make_inputs(models.get_spec("ncf"), 4, np.random.default_rng(0)))
    resp = await client.post("/v2/models/ncf/infer", data=enc.body, headers=enc.headers)
    assert resp.status == 200
    await client.close()
    assert available_cpus() == before


def test_only_onnx_pools_are_pinned():
    with pytest.raises(InputError, match="only ONNX Runtime servers are pinned") as err:
        PoolSpec("r5n.large=1", pin_cores=True)
    assert err.value.field == "pin_cores"
    assert PoolSpec("cpu-1t=1", mode="onnx").pinning() is None


def test_a_pool_plans_threads_times_concurrency_cores_per_server(monkeypatch):
    monkeypatch.setattr("servers.pool.available_cpus", lambda: (0, 1, 2, 3, 4, 5))
    spec = PoolSpec("cpu-2t=1,cpu-1t=2", mode="onnx", pin_cores=True)
    pinning = spec.pinning()
    assert pinning == Pinning(((4, 5), (3,), (2,)), (0, 1))
    assert [c.cpus for c in spec.instance_configs(pinning)] == [(4, 5), (3,), (2,)]
    assert spec.instance_configs() == [
        spec.instance_config(t, s) for t, s in zip(spec.config.instance_types, spec.seeds())
    ]
    with pytest.raises(InputError, match="needs 9 cores: 8 for the servers"):
        PoolSpec("cpu-2t=1,cpu-1t=2", mode="onnx", pin_cores=True, concurrency=2).pinning()


@two_cores
def test_a_pinned_pool_keeps_every_server_thread_on_its_cores_across_a_restart(tmp_path):
    cores = available_cpus()
    spec = PoolSpec("cpu-1t=1", model="ncf", mode="onnx", model_dir=tmp_path, pin_cores=True)
    with start_pool(spec) as pool:
        assert pool.pinning == Pinning(((cores[-1],),), cores[:-1])
        [inst] = pool.instances
        assert set(thread_cpus(inst.pid).values()) == {(cores[-1],)}
        pool.kill(inst.id)
        back = pool.restart(inst.id)
        assert back.pid != inst.pid and set(thread_cpus(back.pid).values()) == {(cores[-1],)}
    assert cpu_affinity.available_cpus() == cores  # starting a pinned pool does not move the caller


def test_the_cli_names_bad_cores_and_a_pool_that_cannot_be_pinned(capsys, tmp_path):
    from harness.cli import main as kairos

    assert kairos(["serve", "model", "--model", "ncf", "--cpus", "3-1"]) == 2
    assert "--cpus '3-1': expected core numbers such as 0-3,6" in capsys.readouterr().err
    argv = ["serve", "pool", "--config", "r5n.large=1", "--pin-cores", "--pool-file", str(tmp_path / "p.json")]
    assert kairos(argv) == 2
    assert "--pin-cores only ONNX Runtime servers are pinned (mode 'emulated': use onnx)" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
