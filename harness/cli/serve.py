"""``kairos serve``: run a model server, an emulated instance, or a whole pool of them.

Each subcommand is one ``add_*_parser(sub)`` function listed in ``SUBCOMMANDS`` (add yours there). A server that has
bound its port prints one line ``READY {"url": ..., "port": ..., "pid": ..., ...}`` on stdout (so ``--port 0`` is
usable: the caller reads the actual port), then serves until SIGINT/SIGTERM (or, with ``--watch-stdin``, until its
stdin closes: a pool's children use it so they never outlive the parent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from harness.core.errors import InputError
from harness.core.gc_freeze import frozen_gc

READY_PREFIX = "READY "


def print_ready(info: dict) -> None:
    """Print the one ``READY {json}`` line callers wait for."""
    print(READY_PREFIX + json.dumps(info, sort_keys=True), flush=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` when stdin reaches EOF (raw fd reads: no buffered-reader lock held at interpreter exit)."""
    fd = sys.stdin.fileno()

    def readable():
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    try:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
    except (OSError, ValueError, PermissionError):  # not pollable (a regular file): a thread waits instead
        os.set_blocking(fd, True)

        def wait_eof():
            try:
                while os.read(fd, 65536):
                    pass
            except OSError:
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_eof, name="stdin-watch", daemon=True).start()


async def serve_async(app, host: str = "127.0.0.1", port: int = 0, info: dict | None = None,
                      watch_stdin: bool = False) -> None:
    """Start ``app`` (running its startup), bind, print READY with the actual URL, serve until told to stop."""
    from aiohttp import web
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        sock = _bind(host, port)
        site = web.SockSite(runner, sock)
        await site.start()
        actual = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if watch_stdin:
            _watch_stdin(loop, stop)
        print_ready({**(info or {}), "url": f"http://{shown}:{actual}", "host": host, "port": actual,
                     "pid": os.getpid()})
        with frozen_gc():  # startup's objects (libraries, models, profiles) are never scanned while serving
            await stop.wait()
    finally:
        await runner.cleanup()


LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str):
    """The event-loop constructor for ``--loop``: ``uvloop``, ``asyncio``, or ``auto`` (uvloop when installed)."""
    if name not in LOOPS:
        raise InputError(f"--loop {name!r}: expected auto, uvloop or asyncio")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise InputError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def serve_app(app, host: str = "127.0.0.1", port: int = 0, info: dict | None = None,
              watch_stdin: bool = False, loop: str = "auto") -> int:
    """Blocking ``serve_async`` on the chosen event loop; returns the exit code."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(serve_async(app, host, port, info, watch_stdin))
    return 0


def add_listen_args(p: argparse.ArgumentParser, loop_default: str = "auto") -> None:
    """``--host``, ``--port`` (0: any free port, printed on the READY line), ``--loop`` and the hidden
    ``--watch-stdin``."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    p.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    # uvloop cuts the event loop's cost per request, a large part of a proxy hop on a small machine.
    p.add_argument("--loop", default=loop_default, choices=LOOPS,
                   help=f"event loop (default {loop_default}; auto: uvloop when installed, else asyncio)")


def _models(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


# -- kairos serve model -----------------------------------------------------------------------------------------
def run_model(args) -> int:
    """``kairos serve model``."""
    from servers.model_server import ModelServerConfig, create_app
    models = tuple(m for text in args.model for m in _models(text)) or ("rm2",)
    config = ModelServerConfig(models=models, model_dir=Path(args.model_dir) if args.model_dir else None,
                               provider=args.provider, threads=args.threads, concurrency=args.concurrency,
                               max_batch=args.max_batch, seed=args.seed, instance_type=args.instance_type)
    info = {"kind": "model", "models": list(models), "provider": args.provider}
    if args.instance_type:
        info["instance_type"] = args.instance_type
    return serve_app(create_app(config), args.host, args.port, info, args.watch_stdin, args.loop)


def add_model_parser(sub) -> None:
    """``kairos serve model``: an ONNX Runtime V2 server."""
    p = sub.add_parser("model", help="serve ONNX models with ONNX Runtime (V2 REST protocol)",
                       description="Serve one or more built-in models with ONNX Runtime over the V2 REST protocol. "
                                   "Models are built into --model-dir if missing.")
    p.add_argument("--model", action="append", default=[], metavar="NAME[,NAME...]",
                   help="model(s) to serve (default rm2); repeat or comma-separate")
    p.add_argument("--model-dir", default=None, help="model cache directory (default $KAIROS_MODEL_DIR or "
                                                     "~/.cache/kairos-harness/models)")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="execution provider (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (default 1)")
    p.add_argument("--concurrency", type=int, default=1, help="inferences running at once (default 1)")
    p.add_argument("--max-batch", type=int, default=1000, help="largest batch accepted (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="weight seed used when building a model (default 0)")
    p.add_argument("--instance-type", default=None, help="label reported in response parameters")
    add_listen_args(p)
    p.set_defaults(func=run_model)


# -- kairos serve emulated --------------------------------------------------------------------------------------
def run_emulated(args) -> int:
    """``kairos serve emulated``."""
    from servers.emulated import EmulatedConfig, create_app
    config = EmulatedConfig(instance_type=args.instance_type, model=args.model,
                            profiles=Path(args.profiles) if args.profiles else None, seed=args.seed,
                            concurrency=args.concurrency)
    info = {"kind": "emulated", "model": args.model, "instance_type": args.instance_type, "seed": args.seed}
    return serve_app(create_app(config), args.host, args.port, info, args.watch_stdin, args.loop)


def add_emulated_parser(sub) -> None:
    """``kairos serve emulated``: one profile-driven emulated instance."""
    p = sub.add_parser("emulated", help="serve an emulated instance (profile-sampled service times)",
                       description="Answer V2 infer requests like the model server, sleeping a service time "
                                   "sampled from a latency profile for (instance type, model, batch bucket).")
    p.add_argument("--instance-type", required=True, help="profiled instance type, e.g. r5n.large")
    p.add_argument("--model", default="rm2", help="profiled model (default rm2)")
    p.add_argument("--profiles", default=None, help="profile parquet/CSV (default: the shipped AWS profiles)")
    p.add_argument("--seed", type=int, default=0, help="seed of the service-time sampler (default 0)")
    p.add_argument("--concurrency", type=int, default=1, help="queries served at once (default 1)")
    # asyncio, not uvloop: libuv timers tick in whole milliseconds and may fire up to 1 ms early, too coarse to
    # emulate service times of a few ms; asyncio's sleeps are never early and late by well under 1 ms.
    add_listen_args(p, loop_default="asyncio")
    p.set_defaults(func=run_emulated)


# -- kairos serve pool ------------------------------------------------------------------------------------------
def run_pool(args) -> int:
    """``kairos serve pool``: start the pool, write the pool file, wait for Ctrl-C/SIGTERM, stop everything."""
    from servers.pool import PoolSpec, start_pool
    spec = PoolSpec(config=args.config, model=args.model, mode=args.mode,
                    profiles=Path(args.profiles) if args.profiles else None,
                    prices=Path(args.prices) if args.prices else None, seed=args.seed,
                    concurrency=args.concurrency, model_dir=Path(args.model_dir) if args.model_dir else None,
                    threads=args.threads, host=args.host)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with start_pool(spec) as pool:
            path = pool.write(args.pool_file)
            print_ready({"kind": "pool", "pool_file": str(path), "model": pool.model, "mode": spec.mode,
                         "instances": [i.to_json() for i in pool.instances], "pid": os.getpid()})
            for inst in pool.instances:
                print(f"{inst.id:>20}  {inst.url}", file=sys.stderr)
            print(f"pool of {len(pool.instances)} written to {path}; Ctrl-C to stop", file=sys.stderr, flush=True)
            while not stop.wait(0.5):
                dead = pool.dead()
                if dead:
                    print(f"kairos serve pool: instance(s) exited unexpectedly: {', '.join(dead)}; stopping",
                          file=sys.stderr)
                    return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_pool_parser(sub) -> None:
    """``kairos serve pool``: one process per instance of a configuration."""
    p = sub.add_parser("pool", help="start one server process per instance and write a pool file",
                       description="Start one emulated instance (or ONNX Runtime server) per instance of --config on "
                                   "loopback, write the pool file, and run until Ctrl-C/SIGTERM, then stop them all.")
    p.add_argument("--config", required=True, help="instance mix, e.g. g4dn.xlarge=2,r5n.large=9")
    p.add_argument("--model", default="rm2", help="model (default rm2)")
    p.add_argument("--mode", choices=("emulated", "onnx"), default="emulated",
                   help="emulated instances (default) or ONNX Runtime CPU servers")
    p.add_argument("--profiles", default=None, help="profile file for emulated instances (default: shipped)")
    p.add_argument("--prices", default=None, help="price CSV (default: shipped AWS prices)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each instance derives its own (default 0)")
    p.add_argument("--concurrency", type=int, default=1, help="queries each instance serves at once (default 1)")
    p.add_argument("--model-dir", default=None, help="model cache directory for --mode onnx")
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads per server for --mode onnx")
    p.add_argument("--host", default="127.0.0.1", help="address the instances bind (default 127.0.0.1)")
    p.add_argument("--pool-file", default="pool.json", help="where to write the pool file (default pool.json)")
    p.set_defaults(func=run_pool)


# -- kairos serve dispatcher ------------------------------------------------------------------------------------
def run_dispatcher(args) -> int:
    """``kairos serve dispatcher``."""
    from harness.dispatch.policies import make_policy
    from servers.dispatcher import DispatcherConfig, create_app
    from servers.pool import load_pool_file
    make_policy(args.policy)  # a bad name or tunable fails before binding
    pool = load_pool_file(args.pool, args.prices)
    config = DispatcherConfig(pool=pool, policy=args.policy, qos_ms=args.qos_ms,
                              profiles=Path(args.profiles) if args.profiles else None,
                              latency_alpha=args.latency_alpha, max_queue=args.max_queue,
                              concurrency=args.concurrency, prefetch_ms=args.prefetch_ms,
                              records_path=Path(args.records) if args.records else None,
                              admin_token=args.admin_token, max_retries=args.max_retries, seed=args.seed)
    info = {"kind": "dispatcher", "policy": args.policy, "model": pool.model, "instances": len(pool.instances),
            "records": args.records or ""}
    return serve_app(create_app(config), args.host, args.port, info, args.watch_stdin, args.loop)


def add_dispatcher_parser(sub) -> None:
    """``kairos serve dispatcher``: the policy-driven proxy in front of a pool."""
    p = sub.add_parser("dispatcher", help="run the dispatcher proxy in front of a pool",
                       description="A V2 proxy with a central queue: each query is assigned to an instance of the "
                                   "pool by the same policy objects the simulator runs. Admin endpoints "
                                   "(/admin/policy, /admin/drain, /admin/status, /admin/flush) answer on loopback "
                                   "or with --admin-token; /metrics is Prometheus text.")
    p.add_argument("--pool", required=True, help="pool file (written by `kairos serve pool`, or by hand)")
    p.add_argument("--policy", default="kairos", help="policy NAME[:k=v] (default kairos)")
    p.add_argument("--qos-ms", type=float, default=None, help="p99 target in ms (default: the paper's for the model)")
    p.add_argument("--profiles", default=None, help="profile seeding the latency model (default: shipped)")
    p.add_argument("--prices", default=None, help="price CSV for pool entries without usd_per_hour")
    p.add_argument("--latency-alpha", type=float, default=0.05,
                   help="weight of each observed service time in the online latency model (0: profile only)")
    p.add_argument("--max-queue", type=int, default=10_000, help="central queue bound; beyond it 503 (default 10000)")
    p.add_argument("--concurrency", type=int, default=1, help="queries per instance at once (default 1)")
    p.add_argument("--prefetch-ms", type=float, default=3.0,
                   help="send an instance its next query this long before its running one is predicted to end, "
                        "hiding the proxy's round trip (default 3; 0: only when idle; needs --concurrency 1)")
    p.add_argument("--max-retries", type=int, default=1, help="retries of a query whose instance failed (default 1)")
    p.add_argument("--records", default=None, help="stream per-query records to this parquet file")
    p.add_argument("--admin-token", default=None, help="also accept admin calls from elsewhere with this bearer token")
    p.add_argument("--seed", type=int, default=0, help="seed of randomized policies (default 0)")
    add_listen_args(p)
    p.set_defaults(func=run_dispatcher)


SUBCOMMANDS = [add_model_parser, add_emulated_parser, add_pool_parser, add_dispatcher_parser]


def register(subparsers) -> None:
    """Add ``kairos serve`` and its subcommands."""
    p = subparsers.add_parser("serve", help="run model servers, emulated instances or a pool",
                              description="Run V2 inference servers on loopback.")
    sub = p.add_subparsers(dest="serve_command", required=True)
    for add in SUBCOMMANDS:
        add(sub)


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.cli.serve SUBCOMMAND ...`` is ``kairos serve SUBCOMMAND ...``."""
    from harness.cli import main as kairos_main
    return kairos_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
