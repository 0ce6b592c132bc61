"""Several emulated instances per process: own ports, own seeded samplers and queues, one process as the unit of
failure, and a clear error for a bad K."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import numpy as np
import pytest

from harness.cli import main as kairos
from harness.core.errors import InputError
from harness.core.profiles import Profile
from harness.live.options import LiveOptions
from servers import models, v2
from servers.emulated import EmulatedConfig, EmulatedHostConfig
from servers.pool import PoolSpec, start_pool
from servers.pool_file import load_pool_file


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pids, timeout=10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return []
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


def _request(batch: int, model: str = "rm2") -> v2.EncodedRequest:
    return v2.encode_infer_request(models.make_inputs(models.get_spec(model), batch, np.random.default_rng(0)))


async def _infer(session: aiohttp.ClientSession, url: str, enc, model: str = "rm2") -> dict:
    async with session.post(f"{url}/v2/models/{model}/infer", data=enc.body, headers=enc.headers) as resp:
        assert resp.status == 200, await resp.text()
        return v2.decode_infer_response(await resp.read(), resp.headers).parameters


def test_k_instances_share_a_process_each_on_its_port_with_its_own_sampler_and_queue(tmp_path):
    spec = PoolSpec("r5n.large=3", model="rm2", seed=7, instances_per_process=3)
    with start_pool(spec) as pool:
        pids = pool.pids
        assert len(pids) == 1 and [i.pid for i in pool.instances] == pids * 3
        urls = [i.url for i in pool.instances]
        assert len(set(urls)) == 3  # three ports, one process
        doc = json.loads(pool.write(tmp_path / "pool.json").read_text())
        assert [i["url"] for i in doc["instances"]] == urls and load_pool_file(tmp_path / "pool.json").instances == (
            pool.instances
        )

        async def exercise():
            async with aiohttp.ClientSession() as session:
                small = _request(10)
                sampled = [[(await _infer(session, u, small))["sampled_ms"] for _ in range(6)] for u in urls]
                # Three long queries at once on the first instance, one on the second: only the first queues.
                big = _request(300)
                answers = await asyncio.gather(
                    *[_infer(session, urls[0], big) for _ in range(3)], _infer(session, urls[1], big)
                )
                return sampled, answers

        sampled, answers = asyncio.run(exercise())
    assert _wait_gone(pids, timeout=0.5) == []
    # Each instance draws from its own generator, seeded as a one-process-per-instance pool seeds it.
    profile = Profile.load(None)
    for seed, got in zip(spec.seeds(), sampled):
        rng = np.random.default_rng(seed)
        assert got == [profile.sample_ms("r5n.large", "rm2", 10, rng) for _ in range(6)]
    assert len({tuple(s) for s in sampled}) == 3
    first, other = answers[:3], answers[3]
    assert sorted(a["queue_ms"] > 0 for a in first) == [False, True, True]  # one served, two waited their turn
    assert other["queue_ms"] == 0.0  # the second instance's queue is its own


def test_a_kill_takes_down_exactly_the_instances_of_that_process_and_restart_brings_them_back():
    spec = PoolSpec("g4dn.xlarge=1,r5n.large=3", model="ncf", seed=1, instances_per_process=2)
    with start_pool(spec) as pool:
        first_pids = list(pool.pids)
        assert len(first_pids) == 2
        # Consecutive instances share a process: g4dn.xlarge-0 with r5n.large-0, r5n.large-1 with r5n.large-2.
        assert pool.process_mates("r5n.large-1") == ["r5n.large-1", "r5n.large-2"]
        before = {i.id: i for i in pool.instances}
        pool.kill("r5n.large-1")
        deadline = time.monotonic() + 10
        while not pool.dead() and time.monotonic() < deadline:  # dead() reaps the killed child
            time.sleep(0.05)
        assert pool.dead() == ["r5n.large-1", "r5n.large-2"]
        assert pool.exit_code("r5n.large-2") == -signal.SIGKILL

        async def answers(urls):
            async with aiohttp.ClientSession() as session:
                return [await _infer(session, u, _request(4, "ncf"), "ncf") for u in urls]

        survivors = [before["g4dn.xlarge-0"].url, before["r5n.large-0"].url]
        assert [a["instance_type"] for a in asyncio.run(answers(survivors))] == ["g4dn.xlarge", "r5n.large"]
        back = pool.restart("r5n.large-2")
        assert pool.dead() == [] and pool.pids[0] == first_pids[0] and pool.pids[1] != first_pids[1]
        assert back.url == before["r5n.large-2"].url and back.pid == pool.pids[1]
        assert {i.id: i.url for i in pool.instances} == {k: i.url for k, i in before.items()}  # same addresses
        assert len(asyncio.run(answers([i.url for i in pool.instances]))) == 4
        pids = list(pool.pids)
    assert _wait_gone(pids, timeout=0.5) == []


@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_refuses_a_k_below_one(value, capsys, tmp_path):
    argv = ["serve", "pool", "--config", "r5n.large=2", "--pool-file", str(tmp_path / "p.json")]
    assert kairos(argv + ["--instances-per-process", value]) == 2
    err = capsys.readouterr().err
    assert f"--instances-per-process {value}: must be an integer >= 1" in err
    assert not (tmp_path / "p.json").exists()  # nothing started


@pytest.mark.parametrize("value", ["2.5", "many"])
def test_cli_refuses_a_non_integer_k(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        kairos(["serve", "pool", "--config", "r5n.large=2", "--instances-per-process", value])
    assert exit_.value.code == 2
    assert f"argument --instances-per-process: invalid int value: '{value}'" in capsys.readouterr().err


def test_k_is_checked_wherever_it_is_set():
    with pytest.raises(InputError, match="only emulated instances share a process"):
        PoolSpec("r5n.large=2", mode="onnx", instances_per_process=2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="must be an integer >= 1") as err:
            LiveOptions(instances_per_process=bad)
        assert err.value.field == "instances_per_process"
    with pytest.raises(InputError, match="one each, or none"):
        EmulatedHostConfig((EmulatedConfig("r5n.large"),), ports=(1, 2))
    assert [list(g) for g in PoolSpec("r5n.large=5", instances_per_process=2).groups()] == [[0, 1], [2, 3], [4]]


@pytest.mark.slow
def test_serve_pool_restarts_a_killed_process_with_all_of_its_instances(tmp_path):
    pool_file = tmp_path / "pool.json"
    cmd = [sys.executable, "-m", "harness.cli", "serve", "pool", "--config", "r5n.large=4", "--model", "ncf"]
    cmd += ["--instances-per-process", "2", "--restart", "--pool-file", str(pool_file)]
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[int] = []
    try:
        info = json.loads(parent.stdout.readline()[6:])
        pids = [i["pid"] for i in info["instances"]]
        seen += pids
        assert pids[0] == pids[1] != pids[2] == pids[3]
        os.kill(pids[2], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while {i.pid for i in load_pool_file(pool_file).instances[2:]} == {pids[2]} and time.monotonic() < deadline:
            time.sleep(0.2)
        back = load_pool_file(pool_file).instances
        seen += [i.pid for i in back]
        assert back[2].pid == back[3].pid != pids[2] and [i.pid for i in back[:2]] == pids[:2]
        assert [i.url for i in back] == [i["url"] for i in info["instances"]]
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=15)
        err = parent.stderr.read()
        for iid in ("r5n.large-2", "r5n.large-3"):
            assert f"instance {iid} exited (code -9)" in err and f"{iid} is back at" in err
        assert "r5n.large-0 exited" not in err and "r5n.large-1 exited" not in err
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert _wait_gone(seen) == []
