"""Test hosts as Linux network namespaces (iproute2): several machines' worth of network stacks on one machine.

Each host of a ``Topology`` is a namespace ``<prefix><name>`` with an ``eth0`` on a private /24; the hosts' links meet
on a bridge in a namespace of its own (``<prefix>sw``), so the root namespace's links are never touched. A host may
have a netem delay on the path into it (the egress of its bridge port: every packet to that host waits that long).
``NetnsHosts`` sets them up as a context manager and starts processes inside them (``ip netns exec``, each with
the host's namespace name as its hostname); its teardown runs on leaving the block, on an exception, and at
interpreter exit, and is idempotent: it stops every process left in its namespaces and deletes them, which takes
their links with them. A SIGKILL of the owner leaves the namespaces behind (the processes started in them get a
SIGTERM as it dies); the next setup of the same topology (or ``teardown()``) removes them first.
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from harness.core.errors import InputError

SWITCH = "sw"  # the bridge's namespace is <prefix>sw
BRIDGE = "br0"
HOST_LINK = "eth0"  # every host's link to the bridge
NAME = re.compile(r"[a-z][a-z0-9]{0,7}")  # short: the bridge port is "v-<name>", and a link name has at most 15 bytes
PREFIX = re.compile(r"[a-z][a-z0-9-]{0,5}")
PR_SET_PDEATHSIG = 1  # prctl(2)
STOP_WAIT_S = 5.0  # SIGTERM, then this long to exit cleanly (a pool stops its instances, a dispatcher flushes)


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run one iproute2 command; an error names the command and what it said."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise OSError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit code {done.returncode}'}")
    return done


def namespaces() -> list[str]:
    """The names ``ip netns list`` shows (empty where it cannot run)."""
    try:
        out = _run(["ip", "netns", "list"], check=False).stdout
    except OSError:
        return []
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _probe(what: Sequence[str], prefix: str) -> str | None:
    """Make a throwaway namespace, run each ``tc`` argument list in it; the first failure's message, or None."""
    name = f"{prefix}probe{os.getpid()}"
    made = _run(["ip", "netns", "add", name], check=False)
    if made.returncode:
        return f"`ip netns add` failed: {made.stderr.strip() or f'exit code {made.returncode}'}"
    try:
        for argv in what:
            done = _run(["tc", "-n", name, *argv], check=False)
            if done.returncode:
                return done.stderr.strip() or f"exit code {done.returncode}"
        return None
    finally:
        _run(["ip", "netns", "del", name], check=False)


def unavailable(prefix: str = "kh-") -> str | None:
    """Why network namespaces cannot be made here (None when they can): not Linux, not root, a tool missing (ip, tc,
    unshare, hostname), or ``ip netns add`` refused (a container without CAP_SYS_ADMIN)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("unshare", "util-linux"), ("hostname", "hostname")):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH ({package})"
    return _probe([], prefix)


def netem_unavailable(prefix: str = "kh-") -> str | None:
    """Why a netem delay cannot be set here (None when it can); ``unavailable()``'s reasons first."""
    reason = unavailable(prefix)
    if reason is not None:
        return reason
    failed = _probe([["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]], prefix)
    if failed is not None:
        return f"this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): tc said {failed!r}"
    return None


@dataclass(frozen=True)
class HostSpec:
    """One host: its name (the namespace is ``<prefix><name>``) and the netem delay of every packet sent to it."""

    name: str
    delay_ms: float = 0.0


@dataclass(frozen=True)
class Topology:
    """The hosts, the namespace prefix (one prefix, one set of namespaces) and their private /24."""

    hosts: tuple[HostSpec, ...]
    prefix: str = "kh-"
    subnet: str = "10.77.0.0/24"

    def __post_init__(self):
        if not PREFIX.fullmatch(self.prefix):
            raise InputError(f"{self.prefix!r}: 1-6 of a-z, 0-9, '-', starting with a letter", field="prefix")
        names = [h.name for h in self.hosts]
        for name in names:
            if not NAME.fullmatch(name) or name == SWITCH:
                raise InputError(f"{name!r}: 1-8 of a-z, 0-9, starting with a letter, not {SWITCH!r}", field="hosts")
        if len(set(names)) != len(names):
            raise InputError(f"{names}: each host name once", field="hosts")
        for h in self.hosts:
            if not 0 <= h.delay_ms < 10_000:
                raise InputError(f"{h.delay_ms}: a delay in [0, 10000) ms", field="delay_ms")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise InputError(f"{self.subnet!r}: {exc}", field="subnet") from None
        if not net.is_private or net.num_addresses - 2 < len(self.hosts):
            raise InputError(f"{self.subnet}: a private network with room for {len(self.hosts)} hosts", field="subnet")

    @property
    def switch(self) -> str:
        """The bridge's namespace."""
        return f"{self.prefix}{SWITCH}"

    def namespaces(self) -> list[str]:
        """Every namespace this topology makes: the hosts', then the bridge's."""
        return [f"{self.prefix}{h.name}" for h in self.hosts] + [self.switch]


@dataclass(frozen=True)
class Host:
    """A host as processes see it: its namespace and its address on the private network."""

    name: str
    namespace: str
    address: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace, with the namespace's name as its hostname."""
        # A UTS namespace of its own for the hostname: what names itself by it (a Locust worker's id) names the host.
        set_name = 'hostname "$0" && exec "$@"'
        return [
            "ip",
            "netns",
            "exec",
            self.namespace,
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            set_name,
            self.namespace,
            *argv,
        ]


class NetnsHosts:
    """The hosts of a topology as network namespaces: set up on entering, torn down on leaving (and at exit)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        net = ipaddress.IPv4Network(topology.subnet)
        addresses = list(net.hosts())
        self.prefixlen = net.prefixlen
        self.hosts = {
            h.name: Host(h.name, f"{topology.prefix}{h.name}", str(addresses[k])) for k, h in enumerate(topology.hosts)
        }
        self._procs: list[subprocess.Popen] = []
        self._registered = False

    def __enter__(self) -> NetnsHosts:
        self.setup()
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def setup(self) -> None:
        """Make the namespaces, the bridge, each host's link, address and delay (leftovers of a killed run first)."""
        if not self._registered:
            atexit.register(self.teardown)
            self._registered = True
        self._clear()
        t = self.topology
        sw = t.switch
        try:
            _run(["ip", "netns", "add", sw])
            _run(["ip", "-n", sw, "link", "set", "lo", "up"])
            _run(["ip", "-n", sw, "link", "add", BRIDGE, "type", "bridge"])
            _run(["ip", "-n", sw, "link", "set", BRIDGE, "up"])
            for spec in t.hosts:
                host = self.hosts[spec.name]
                ns, port = host.namespace, f"v-{spec.name}"
                _run(["ip", "netns", "add", ns])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                _run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", HOST_LINK, "netns", ns])
                _run(["ip", "-n", sw, "link", "set", port, "master", BRIDGE, "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{host.address}/{self.prefixlen}", "dev", HOST_LINK])
                _run(["ip", "-n", ns, "link", "set", HOST_LINK, "up"])
                if spec.delay_ms > 0:  # the bridge port's egress is the path into this host
                    _run(["tc", "-n", sw, "qdisc", "add", "dev", port, "root", "netem", "delay", f"{spec.delay_ms}ms"])
        except BaseException:
            self.teardown()
            raise

    def popen(self, host: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside ``host``'s namespace, in a process group of its own (teardown stops it)."""
        proc = subprocess.Popen(
            self.hosts[host].argv(argv), start_new_session=True, preexec_fn=_die_with_owner, **kwargs
        )
        self._procs.append(proc)
        return proc

    def teardown(self) -> None:
        """Stop the processes started here (SIGTERM to each group, then SIGKILL), then any other process still in
        one of the namespaces, and delete the namespaces. Safe to call again, and when nothing was set up."""
        self._clear()
        if self._registered:
            atexit.unregister(self.teardown)
            self._registered = False

    def _clear(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)  # also whatever it started in its group
                proc.wait(timeout=5)
        self._procs.clear()
        present = set(namespaces())
        for ns in self.topology.namespaces():
            if ns not in present:
                continue
            # What is still inside (a process that started a session of its own, as servers do, or a leftover of a
            # killed run) would keep the namespace alive after its name is deleted.
            for pid in _pids_in(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _run(["ip", "netns", "del", ns], check=False)

    def leftovers(self) -> list[str]:
        """This topology's namespaces that exist now (empty after teardown)."""
        present = set(namespaces())
        return [ns for ns in self.topology.namespaces() if ns in present]


def _die_with_owner() -> None:
    # In the child before exec (and kept across it): SIGTERM when the process that started it dies, a SIGKILL of the
    # owner included, so a killed run leaves at most its namespaces, no process serving or sending in them.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _pids_in(namespace: str) -> list[int]:
    done = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
