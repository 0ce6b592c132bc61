"""--mode onnx: instance types that fix threads and provider, the local profile measured before the sweep, its cache."""

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from harness.core.errors import InputError
from harness.core.profiles import Profile
from harness.live.local_profile import (
    LocalProfileConfig,
    ServerSettings,
    buckets_for,
    cache_key,
    local_profile,
    machine,
    pool_settings,
    stolen_text,
)
from harness.live.options import LiveOptions
from harness.live.replay import AsyncioLoadGenerator
from harness.live.run import LiveRun
from harness.live.stack import LiveStack
from servers.cpu_affinity import Pinning, available_cpus, format_cpus, thread_cpus
from servers.host_types import HostType, check_available, host_type
from servers.pool import PoolSpec, start_pool


def test_instance_types_name_threads_and_provider_or_are_labels():
    assert host_type("cpu-2t") == HostType("cpu", 2)
    assert host_type("cpu-1t") == HostType("cpu", 1)
    assert host_type("cuda") == HostType("cuda", 1)
    assert host_type("cuda-4t") == HostType("cuda", 4)
    for label in ("r5n.large", "g4dn.xlarge", "cpu-0t", "cpu-2", "gpu"):
        assert host_type(label) is None, label
    with pytest.raises(InputError, match="cpu-1t or cpu-2t"):
        host_type("cpu")


def test_a_cuda_type_is_refused_where_onnxruntime_has_no_cuda_provider():
    with pytest.raises(InputError, match="cuda: this ONNX Runtime has no CUDAExecutionProvider") as err:
        check_available(["cpu-1t", "cuda"], ["CPUExecutionProvider"])
    assert err.value.field == "instance_type"
    check_available(["cpu-1t", "cuda"], ["CUDAExecutionProvider", "CPUExecutionProvider"])
    check_available(["cpu-2t", "r5n.large"], ["CPUExecutionProvider"])


def test_onnx_pool_servers_take_their_threads_from_the_type():
    spec = PoolSpec("cpu-2t=1,r5n.large=1,cuda=1", mode="onnx", threads=3)
    assert (spec.instance_config("cpu-2t", 0).threads, spec.instance_config("cpu-2t", 0).provider) == (2, "cpu")
    assert spec.instance_config("r5n.large", 0).threads == 3  # a label: the pool's --threads
    assert spec.instance_config("cuda", 0).provider == "cuda"


def test_buckets_cover_the_largest_batch_on_the_grid():
    assert buckets_for(95, 10) == tuple(range(10, 101, 10))
    assert buckets_for(100, 10) == tuple(range(10, 101, 10))
    assert buckets_for(1, 10) == (10,)
    with pytest.raises(InputError):
        buckets_for(0, 10)


def test_the_cache_key_changes_with_threads_contention_model_and_machine():
    host = {"cpu": "x", "logical_cpus": 2, "arch": "x86_64", "onnxruntime": "1.0"}
    one = [ServerSettings("a", "cpu", 1, 1), ServerSettings("b", "cpu", 2, 1)]
    base = cache_key("rm2", one, LocalProfileConfig(), host)
    assert base == cache_key("rm2", list(reversed(one)), LocalProfileConfig(), host)  # order of instances: same pool
    assert base != cache_key("rm2", [ServerSettings("a", "cpu", 2, 1), one[1]], LocalProfileConfig(), host)
    assert base != cache_key("ncf", one, LocalProfileConfig(), host)
    assert base != cache_key("rm2", one, LocalProfileConfig(contention="alone"), host)
    assert base != cache_key("rm2", one, LocalProfileConfig(), {**host, "logical_cpus": 16})
    with pytest.raises(InputError):
        LocalProfileConfig(contention="sometimes")


def test_pinned_servers_are_a_new_key_and_unpinned_ones_keep_the_key_they_had():
    host = {"cpu": "x", "logical_cpus": 2, "arch": "x86_64", "onnxruntime": "1.0"}
    servers = [ServerSettings("a", "cpu", 1, 1), ServerSettings("b", "cpu", 2, 1)]
    # what this key was before servers could be pinned: a cache measured then is still found
    assert cache_key("custom", servers, LocalProfileConfig(), host) == "d02cedc2a7386b8f"
    pinned = [replace(servers[0], cpus=(1,)), servers[1]]
    assert cache_key("custom", pinned, LocalProfileConfig(), host) != "d02cedc2a7386b8f"
    assert cache_key("custom", pinned, LocalProfileConfig(), host) != cache_key(
        "custom", [replace(servers[0], cpus=(0,)), servers[1]], LocalProfileConfig(), host
    )


@pytest.fixture(scope="module")
def onnx_pool(tmp_path_factory):
    """ncf on one 1-thread and one 2-thread ONNX Runtime server."""
    spec = PoolSpec("cpu-1t=1,cpu-2t=1", model="ncf", mode="onnx", model_dir=tmp_path_factory.mktemp("models"))
    with start_pool(spec) as pool:
        settings = pool_settings(pool)
        yield list(pool.instances), settings


@pytest.mark.parametrize("contention", ["together", "alone"])
def test_local_profile_is_measured_then_taken_from_the_cache(onnx_pool, tmp_path, contention):
    instances, settings = onnx_pool
    config = LocalProfileConfig(contention=contention, samples=3, warmup=1, cache_dir=tmp_path / "cache")
    logs = []
    first = local_profile(instances, settings, "ncf", 15, tmp_path / "run" / "profile.parquet", config, logs.append)
    assert not first["cached"] and first["max_bucket"] == 20 and first["contention"] == contention
    profile = Profile.load(first["path"], drop_max=False)
    for itype in ("cpu-1t", "cpu-2t"):
        table = profile.table(itype, "ncf")
        assert list(table.buckets) == [10, 20]
        assert all(len(s) == 3 for s in table.samples_ms) and all(m > 0 for m in table.mean_ms)
    meta = json.loads((tmp_path / "cache" / f"ncf-{first['key']}.json").read_text())
    assert meta["machine"] == machine() and {s["threads"] for s in meta["servers"]} == {1, 2}
    # the hypervisor's steal while it was measured, kept beside the cache and given back with it
    steal = first["host_steal_percent"]
    assert steal is None or 0.0 <= steal <= 100.0
    assert meta["host_steal_percent"] == (None if steal is None else round(steal, 2))
    # and when: a profile taken from the cache may be older than the host's present speed
    measured_at = datetime.fromisoformat(first["measured_at"])
    assert meta["measured_at"] == first["measured_at"] and measured_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - measured_at) < timedelta(minutes=5)

    again = local_profile(instances, settings, "ncf", 20, tmp_path / "other.parquet", config, logs.append)
    assert again["cached"] and again["key"] == first["key"]
    assert again["host_steal_percent"] == meta["host_steal_percent"]
    assert again["measured_at"] == first["measured_at"]
    assert pd.read_parquet(again["path"]).equals(pd.read_parquet(first["path"]))
    assert any(
        f"from the cache ({tmp_path / 'cache'}" in line and f"measured {first['measured_at']})" in line for line in logs
    )
    # a larger batch than the cache holds, or --reprofile: measured again
    larger = local_profile(instances, settings, "ncf", 25, tmp_path / "p3.parquet", config, logs.append)
    assert not larger["cached"] and larger["max_bucket"] == 30
    fresh = local_profile(instances, settings, "ncf", 25, tmp_path / "p4.parquet", replace(config, refresh=True))
    assert not fresh["cached"]


def test_a_torn_cache_file_is_measured_again(onnx_pool, tmp_path):
    instances, settings = onnx_pool
    config = LocalProfileConfig(samples=2, warmup=0, cache_dir=tmp_path)
    first = local_profile(instances, settings, "ncf", 10, tmp_path / "a.parquet", config, lambda _: None)
    (tmp_path / f"ncf-{first['key']}.parquet").write_bytes(b"PAR1 torn")
    logs = []
    again = local_profile(instances, settings, "ncf", 10, tmp_path / "b.parquet", config, logs.append)
    assert not again["cached"] and any("unreadable" in line for line in logs)


def test_live_options_profile_only_pools_they_start_in_onnx_mode(tmp_path):
    assert LiveOptions(mode="onnx").profiles_local
    assert not LiveOptions(mode="emulated").profiles_local
    assert not LiveOptions(mode="onnx", profile_local="off").profiles_local
    assert not LiveOptions(mode="onnx", profiles=tmp_path / "p.parquet").profiles_local
    assert not LiveOptions(mode="onnx", pool_file=tmp_path / "pool.json").profiles_local
    with pytest.raises(InputError) as err:
        LiveOptions(profile_local="never")
    assert err.value.field == "profile_local"


@pytest.mark.slow
def test_an_onnx_run_profiles_its_servers_and_schedules_with_what_it_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("KAIROS_PROFILE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KAIROS_MODEL_DIR", str(tmp_path / "models"))
    options = LiveOptions(
        model="ncf",
        mode="onnx",
        pool_config="cpu-1t=1,cpu-2t=1",
        dispatchers=("kairos",),
        qos_ms=50.0,
        rate_qps=40.0,
        phase_seconds=3.0,
        phase_queries=100,
        min_queries=50,
        report_dir=tmp_path / "reports",
        lead_s=1.0,
    )
    run = LiveRun(options, log=lambda _: None)
    run.start()
    path = run.run_dir.path
    assert (path / "profile.parquet").exists()
    assert set(run.profile.instance_types) == {"cpu-1t", "cpu-2t"}  # the simulator and checks use what was measured
    run.run(AsyncioLoadGenerator())
    meta = json.loads((path / "run.json").read_text())
    assert meta["profile"]["contention"] == "together" and not meta["profile"]["cached"]
    summary = pd.read_parquet(path / "summary.parquet")
    assert len(summary) == 1 and summary["sim_p99_ms"].notna().all()
    # the fidelity check compared live service times with the measured profile, not the shipped AWS one
    assert summary["service_excess"].notna().all()


def test_a_profile_measured_while_the_hypervisor_stole_says_so():
    assert stolen_text(12.4) == (
        "; the hypervisor stole 12% of the CPU while it was measured, so its latencies may read slow: measure again "
        "on a quieter host (--reprofile)"
    )
    assert stolen_text(4.9) == "" and stolen_text(float("nan")) == ""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores this process may use")
def test_a_pinned_onnx_stack_keeps_servers_dispatcher_and_load_generator_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("KAIROS_PROFILE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KAIROS_MODEL_DIR", str(tmp_path / "models"))
    cores = available_cpus()
    server, rest = (cores[-1],), cores[:-1]
    options = LiveOptions(model="ncf", mode="onnx", pool_config="cpu-1t=1", pin_cores=True, report_dir=tmp_path)
    logs: list[str] = []
    stack = LiveStack(options, "ncf", tmp_path / "dispatcher.parquet", logs.append, max_batch=10)
    try:
        assert stack.pinning == Pinning((server,), rest)
        [inst] = stack.pool_file.instances
        assert set(thread_cpus(inst.pid).values()) == {server}
        assert set(thread_cpus(stack.dispatcher.pid).values()) == {rest}  # started after this process pinned itself
        assert set(thread_cpus(os.getpid()).values()) == {rest}  # the load generator and the profiler
        assert (
            f"pinned: cpu-1t-0 on cores {format_cpus(server)}; load generator and dispatcher on {format_cpus(rest)}"
            in logs
        )
        # measured as it will run, and under its own key
        meta = json.loads(Path(stack.profile_info["cache_path"]).with_suffix(".json").read_text())
        assert [s["cpus"] for s in meta["servers"]] == [list(server)]
    finally:
        stack.stop()
    assert available_cpus() == cores  # given back: this process goes on as it was


def test_an_unpinned_run_whose_servers_were_slowed_by_the_harness_is_told_about_pinning(monkeypatch):
    from harness.live.run import pinning_hint

    slowed = {"fidelity_ok": False, "busy_host": "", "service_excess": 0.2}
    rows = [slowed, {**slowed, "fidelity_ok": True}, {**slowed, "busy_host": "the hypervisor stole 9% of the CPU"}]
    rows += [{**slowed, "service_excess": 0.01}]  # failed for something else (send lag): not the servers
    assert pinning_hint(rows, True, 0.05) == (
        "note: in 1 of 4 phases the servers served slower than profiled while they shared this host's cores with "
        "the load generator and the dispatcher; --pin-cores gives each server cores of its own"
    )
    assert pinning_hint(rows, False, 0.05) == ""  # no cores to pin them on
    assert pinning_hint(rows[1:], True, 0.05) == ""
    monkeypatch.setattr("servers.pool.available_cpus", lambda: (0, 1))
    run = LiveRun(LiveOptions(mode="onnx", model="dien", pool_config="cpu-1t=1"), log=lambda _: None)
    assert run.could_pin()
    assert not LiveRun(replace(run.options, pin_cores=True), log=lambda _: None).could_pin()  # pinned already
    assert not LiveRun(replace(run.options, pool_config="cpu-2t=1"), log=lambda _: None).could_pin()  # 3 cores
    assert not LiveRun(LiveOptions(model="dien"), log=lambda _: None).could_pin()  # emulated
