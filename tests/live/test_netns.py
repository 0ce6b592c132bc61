"""Several hosts as network namespaces (harness/live/netns.py, benchmarks/netns_hosts.py), and the locustfile's run
against a dispatcher it did not start (--dispatcher-url). Where namespaces cannot be made (not root, no iproute2,
``ip netns add`` refused, no netem for the netem variant) those tests skip with the reason; the delay can also come
from the userspace delay line (harness/live/delay_relay.py), which needs no netem."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from dataclasses import replace

import pytest

from benchmarks import netns_hosts
from harness.core.errors import InputError
from harness.live import netns
from harness.live.netns import HostSpec, NetnsHosts, Topology
from harness.live.options import LiveOptions
from harness.live.replay import payloads_for
from harness.live.stack import LiveStack
from servers.dispatcher import DispatcherConfig
from servers.pool import PoolSpec, start_pool
from servers.process import spawn_server, stop_processes

PREFIX = "kt-"  # not the script's kh-: a test run never tears down a benchmark run in progress


def skip_unless_netns() -> None:
    reason = netns.unavailable(PREFIX)
    if reason:
        pytest.skip(reason)


def alive(pid: int) -> bool:
    return not netns_hosts.gone(pid)


def test_topology_refuses_names_that_do_not_fit_a_link_name():
    with pytest.raises(InputError) as exc:
        Topology((HostSpec("averylonghostname"),))
    assert exc.value.field == "hosts"
    with pytest.raises(InputError):
        Topology((HostSpec("a"), HostSpec("a")))
    with pytest.raises(InputError) as exc:
        Topology((HostSpec("a"),), subnet="8.8.8.0/24")
    assert exc.value.field == "subnet"


def test_a_dispatcher_url_needs_the_pool_it_fronts():
    with pytest.raises(InputError) as exc:
        LiveOptions(dispatcher_url="http://10.0.0.2:8000")
    assert exc.value.field == "dispatcher_url"
    with pytest.raises(InputError):
        LiveOptions(dispatcher_url="10.0.0.2:8000", pool_file="pool.json")


def test_hosts_reach_each_other_and_teardown_removes_everything_even_on_an_error():
    skip_unless_netns()
    hosts = NetnsHosts(Topology((HostSpec("a"), HostSpec("b")), prefix=PREFIX))
    a = hosts.hosts["a"]
    with pytest.raises(RuntimeError, match="on purpose"), hosts:
        sleeper = hosts.popen("a", ["sleep", "300"])
        reach = subprocess.run(
            hosts.hosts["b"].argv(
                [sys.executable, "-c", f"import socket; socket.create_connection(('{a.address}', 9))"]
            ),
            capture_output=True,
            text=True,
        )
        assert "ConnectionRefusedError" in reach.stderr  # the other namespace answered: nothing listens on port 9
        named = subprocess.run(hosts.hosts["b"].argv(["hostname"]), capture_output=True, text=True)
        assert named.stdout.strip() == f"{PREFIX}b"
        assert sorted(hosts.leftovers()) == sorted(f"{PREFIX}{n}" for n in ("a", "b", "sw"))
        raise RuntimeError("on purpose")
    assert hosts.leftovers() == []
    assert not alive(sleeper.pid)
    hosts.teardown()  # again: nothing to do
    assert not [ns for ns in netns.namespaces() if ns.startswith(PREFIX)]


def test_setup_removes_what_a_killed_run_left():
    skip_unless_netns()
    topology = Topology((HostSpec("a"),), prefix=PREFIX)
    first = NetnsHosts(topology)
    first.setup()
    leftover = first.popen("a", ["sleep", "300"])
    try:
        with NetnsHosts(topology) as again:  # a fresh owner, as after a SIGKILL of the first
            assert again.leftovers() == [f"{PREFIX}a", f"{PREFIX}sw"]
            assert not alive(leftover.pid)
        assert again.leftovers() == []
    finally:
        first.teardown()
        leftover.wait(timeout=10)


def test_a_run_attaches_to_a_running_dispatcher_and_checks_it_fronts_the_pool(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with start_pool(PoolSpec("r5n.large=1", "rm2")) as pool:
        pool_path = pool.write(tmp_path / "pool.json")
        disp = spawn_server("dispatcher", DispatcherConfig(pool=pool.as_pool_file(), admin_token="s3cret"))
        try:
            options = LiveOptions(pool_file=pool_path, dispatcher_url=disp.url, dispatcher_token_file=token)
            stack = LiveStack(options, "rm2", tmp_path / "dispatcher.parquet", log=lambda _: None)
            assert stack.url == disp.url and stack.pids() == [] and stack.dispatcher.pid is None
            stack.set_policy("fcfs")
            stack.stop()
            assert disp.alive()  # not ours to stop
            with pytest.raises(InputError) as exc:
                LiveStack(replace(options, qos_ms=10.0), "rm2", tmp_path / "d", log=print)
            assert exc.value.field == "qos_ms"
            with pytest.raises(InputError) as exc:
                LiveStack(replace(options, dispatcher_token_file=tmp_path / "none"), "rm2", tmp_path, print)
            assert exc.value.field == "dispatcher_token_file"
            enc = payloads_for("rm2").get(10)
            req = urllib.request.Request(
                f"{disp.url}/v2/models/rm2/infer", data=enc.body, headers={**enc.headers, "X-Request-ID": "p0-0"}
            )
            urllib.request.urlopen(req, timeout=60).read()
            with pytest.raises(
                InputError, match=r"already holds 1 query record\(s\)"
            ) as exc:  # p0-0 would be counted twice
                LiveStack(options, "rm2", tmp_path, print)
            assert exc.value.field == "dispatcher_url"
        finally:
            stop_processes([disp])


@pytest.mark.slow
@pytest.mark.parametrize(
    "delay_ms, via", [(0.0, "netem"), (5.0, "netem"), (5.0, "relay")], ids=["no-delay", "netem-5ms", "relay-5ms"]
)
def test_a_phase_across_namespaces_sends_each_query_once_and_reports_send_lag_per_worker(tmp_path, delay_ms, via):
    reason = netns.unavailable(PREFIX) or (netns.netem_unavailable(PREFIX) if delay_ms and via == "netem" else None)
    if reason:
        pytest.skip(reason)
    config = netns_hosts.CrossHostRun(
        rate_qps=50.0, phase_seconds=10.0, workers=2, delay_ms=delay_ms, delay_via=via, prefix=PREFIX
    )
    hosts = NetnsHosts(netns_hosts.topology(config))
    with hosts:  # torn down whatever happens inside
        result = netns_hosts.run_across(hosts, config, tmp_path, log=print)
    assert hosts.leftovers() == []
    assert result.master_rc == 0
    (phase,) = result.phases
    assert phase["planned"] == 500
    assert phase["client_rows"] == phase["unique_ids"] == phase["planned"]
    assert phase["duplicates"] == phase["missing"] == phase["stray"] == 0
    assert result.each_query_once
    # Each worker sent its interleaved half, and its send lag is reported: in queries.parquet and the master's log.
    # Locust's worker id is its hostname, "_", a uuid: each worker ran on its own host.
    assert sorted(w.rsplit("_", 1)[0] for w in result.workers) == [f"{PREFIX}w1", f"{PREFIX}w2"]
    assert [w["queries"] for w in result.workers.values()] == [250, 250]
    assert all(w["send_lag_p99_ms"] >= 0 for w in result.workers.values())
    (line,) = result.worker_log_lines
    assert all(f"{worker} 250 queries, send lag p99" in line for worker in result.workers)
    if delay_ms:  # every request to the pool waits at least this long on the way
        assert result.pool_rtt_ms >= delay_ms
    if via == "relay" and delay_ms:  # the dispatcher's every request went through the delay line
        assert result.relay["chunks"] >= 500 and result.relay["late_p50_ms"] >= 0.0
    else:
        assert result.relay == {}
    assert not [pid for pid in result.started_pids if alive(pid)]


def test_the_delay_is_made_by_netem_where_the_kernel_has_it_else_by_the_relay():
    why = netns.netem_unavailable(PREFIX)
    assert netns_hosts.delay_method("auto", PREFIX) == ("relay" if why else "netem", why)
    assert netns_hosts.delay_method("relay", PREFIX) == ("relay", None)
    assert netns_hosts.delay_method("netem", PREFIX) == ("netem", why)  # the caller refuses to run without it
    with pytest.raises(InputError) as exc:
        netns_hosts.delay_method("tc", PREFIX)
    assert exc.value.field == "delay_via"
