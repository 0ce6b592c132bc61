"""Server child processes: start one on a free port, wait for its READY line, stop a group of them cleanly.

Each child runs ``python -m servers.launch`` with its frozen config as JSON, binds a free port itself and reports it on
a ``READY {json}`` stdout line (no port races). Stopping sends SIGTERM to each child's process group, then SIGKILL
after a timeout, and reaps them. Children also exit when their stdin closes, so they do not outlive a parent that is
killed outright.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from harness.core.errors import InputError
from servers.launch import child_argv, server_kind
from servers.serving import READY_PREFIX, Listen


def _child_env(code_root: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Importable even without an installed package; another checkout's root runs that checkout's code (before/after
    # benchmarks run two revisions side by side).
    root = str(code_root or Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """A server child (``servers.launch``) in its own process group; ``wait_ready`` returns its READY info."""

    def __init__(
        self,
        kind: str,
        config,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        loop: str | None = None,
        name: str = "server",
        python: str | None = None,
        code_root: Path | None = None,
    ):
        self.name = name
        self.kind, self.config = kind, config
        listen = Listen(host=host, port=port, loop=loop or server_kind(kind).default_loop, watch_stdin=True)
        self.argv = child_argv(kind, config, listen, python or sys.executable)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_child_env(code_root),
            # `python -m` puts the working directory first on sys.path: another checkout must also be the cwd.
            cwd=code_root,
            start_new_session=True,
        )
        self.info: dict | None = None
        self._ready = threading.Event()
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True, name=f"{name}-out"),
            threading.Thread(target=self._read_stderr, daemon=True, name=f"{name}-err"),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        """The child's pid (also its process-group id)."""
        return self.proc.pid

    @property
    def url(self) -> str:
        """Base URL reported by the child."""
        if self.info is None:
            raise RuntimeError(f"{self.name} is not ready")
        return self.info["url"]

    @property
    def urls(self) -> list[str]:
        """Base URLs of every server the child runs: its one, or each of a host's instances, in config order."""
        if self.info is None:
            raise RuntimeError(f"{self.name} is not ready")
        hosted = self.info.get("instances")
        return [i["url"] for i in hosted] if hosted else [self.info["url"]]

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if self.info is None and line.startswith(READY_PREFIX):
                try:
                    self.info = json.loads(line[len(READY_PREFIX) :])
                except json.JSONDecodeError:
                    continue
                self._ready.set()
        self._ready.set()  # EOF: wake a waiter (it checks whether the process died)

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self._stderr_tail.append(line)
            print(f"[{self.name}] {line}", file=sys.stderr, flush=True)

    def stderr_tail(self) -> str:
        """The last lines the child wrote on stderr."""
        return "\n".join(self._stderr_tail)

    def wait_ready(self, timeout: float) -> dict:
        """Block until READY; an error if the child exits first or ``timeout`` passes."""
        if not self._ready.wait(timeout):
            raise InputError(f"{self.name}: not ready after {timeout:.0f} s")
        if self.info is None:  # stdout closed without a READY line: the child died
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
            for t in self._threads:
                t.join(timeout=1)
            tail = self.stderr_tail().strip().splitlines()
            why = tail[-1] if tail else "no message"
            raise InputError(f"{self.name}: exited with code {code} before it was ready: {why}")
        return self.info

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (ignoring one already gone)."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close_stdin(self) -> None:
        """Close the child's stdin (it exits on EOF)."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass


def stop_processes(procs: list[ServerProcess], timeout: float = 5.0) -> None:
    """SIGTERM every group, wait up to ``timeout``, SIGKILL the rest, reap all."""
    for p in procs:
        if p.alive():
            p.signal_group(signal.SIGTERM)
        p.close_stdin()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        p.signal_group(signal.SIGKILL)  # also takes any grandchild left in the group
        try:
            p.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (p.proc.stdout, p.proc.stderr):
            try:
                stream.close()
            except (OSError, AttributeError):
                pass


def spawn_server(
    kind: str,
    config,
    *,
    host: str = "127.0.0.1",
    loop: str | None = None,
    name: str = "server",
    timeout: float = 60.0,
    python: str | None = None,
    code_root: Path | None = None,
) -> ServerProcess:
    """Start a ``kind`` server for ``config`` on a free port of ``host`` and wait for its READY line (``loop``:
    the event loop, default the kind's own; ``code_root``: run another checkout's code)."""
    proc = ServerProcess(kind, config, host=host, loop=loop, name=name, python=python, code_root=code_root)
    try:
        proc.wait_ready(timeout)
    except BaseException:
        stop_processes([proc])
        raise
    return proc


def wait_healthy(url: str, timeout: float) -> None:
    """Poll ``GET {url}/v2/health/ready`` until it answers 200."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise InputError(f"{url}: not ready after {timeout:.0f} s ({last})")
