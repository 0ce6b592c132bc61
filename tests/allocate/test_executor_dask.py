"""The oracle on a Dask cluster (--executor dask://HOST:PORT) ranks configurations exactly as local processes do."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from harness.allocate.evaluate import Evaluator, ExecutorSpec
from harness.allocate.oracle import run_oracle
from harness.allocate.space import enumerate_configs
from harness.cli import main
from harness.core.errors import InputError
from tests.allocate.toy import toy_problem


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded Dask worker processes and their scheduler on loopback."""
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed: pip install -e '.[dask]'")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def toy():
    """The toy problem of tests/allocate/toy.py, short traces."""
    return toy_problem(1000)


def _figures(result):
    return [(e.counts, e.allowable_qps, e.bracket_qps, e.upper_qps, e.points) for e in result.evaluations]


@pytest.mark.slow  # a Dask cluster and a local pool start: about 20 s on two shared cores
def test_oracle_on_dask_matches_local_processes(cluster, toy):
    problem, ctx = toy
    configs = enumerate_configs(problem)
    seen = []
    on_dask = run_oracle(
        Evaluator(ctx, ExecutorSpec(cluster.scheduler_address)), configs, progress=lambda d, n, ev: seen.append((d, n))
    )
    local = run_oracle(Evaluator(ctx), configs, workers=2)
    assert _figures(on_dask) == _figures(local)
    assert [e.counts for e in on_dask.evaluations] == [tuple(r) for r in configs.tolist()]
    assert on_dask.top(len(configs)) == local.top(len(configs)) and on_dask.best_index == local.best_index
    assert seen[-1] == (5, 5) and len(seen) == 5
    assert on_dask.executor == f"dask {cluster.scheduler_address}"


@pytest.mark.slow
def test_cli_oracle_on_dask_gives_the_local_answer(cluster, capsys):
    port = cluster.scheduler_address.rsplit(":", 1)[1]
    argv = ["allocate", "--model", "rm2", "--budget", "1.0", "--types", "g4dn.xlarge,r5n.large"]
    argv += ["--method", "oracle", "--queries", "500", "--no-measure", "--json", "--quiet"]
    answers = []
    for executor in (f"dask://127.0.0.1:{port}", "local"):
        assert main([*argv, "--executor", executor]) == 0
        answers.append(json.loads(capsys.readouterr().out.splitlines()[0]))
    on_dask, local = answers
    assert on_dask["executor"] == f"dask tcp://127.0.0.1:{port}" and local["executor"] == "local"
    for key in ("config", "search_allowable_qps", "evaluated"):
        assert on_dask[key] == local[key]


def test_executor_specs_parse_and_name_the_fault():
    assert ExecutorSpec.parse("local").is_local
    assert ExecutorSpec.parse(" local ") == ExecutorSpec()
    for bad in ("dask", "dask://host", "http://host:1", "dask://:8786", "dask://host:port"):
        with pytest.raises(InputError, match="expected local, dask://HOST:PORT"):
            ExecutorSpec.parse(bad)
    with pytest.raises(InputError, match="port must be in 1..65535"):
        ExecutorSpec.parse("dask://host:70000")


def test_missing_distributed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(InputError, match=r"pip install -e '\.\[dask\]'") as err:
        ExecutorSpec.parse("dask://127.0.0.1:8786")
    assert err.value.shown_as({"executor": "--executor"}).startswith("--executor tcp://127.0.0.1:8786: ")


def test_unreachable_scheduler_names_the_address(capsys):
    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install -e '.[dask]'")
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(InputError, match=f"{address}: cannot reach a Dask scheduler"):
        ExecutorSpec(address, connect_timeout_s=1.0).check()
    argv = ["allocate", "--model", "rm2", "--budget", "1.0", "--method", "oracle", "--executor", address]
    assert main([*argv, "--workers", "2"]) == 2
    assert "--workers 2: counts local processes" in capsys.readouterr().err
