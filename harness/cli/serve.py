"""``kairos serve``: run a model server, an emulated instance, a whole pool of them, or the dispatcher proxy.

Each subcommand is one ``add_*_parser(sub)`` function listed in ``SUBCOMMANDS``: it turns its options into the
server's frozen config and serves it through ``servers.serving`` (which prints the ``READY {json}`` line and serves
until SIGINT/SIGTERM). Defaults come from the config dataclasses, so they are stated once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from harness.core.errors import InputError
from servers import dispatcher, emulated, model_server
from servers.cpu_affinity import format_cpus, parse_cpus
from servers.dispatcher import DispatcherConfig
from servers.emulated import EmulatedConfig
from servers.faults import parse_fault
from servers.model_server import ModelServerConfig
from servers.pool import MODES, PoolSpec, start_pool
from servers.pool_file import load_pool_file
from servers.serving import LOOPS, Listen, ServerKind, print_ready, serve


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def add_listen_args(p: argparse.ArgumentParser, kind: ServerKind) -> None:
    """``--host``, ``--port`` (0: any free port, printed on the READY line) and ``--loop``."""
    p.add_argument("--host", default=Listen.host, help=f"address to bind (default {Listen.host})")
    p.add_argument("--port", type=int, default=Listen.port, help="port to bind; 0 picks a free one (default 0)")
    # uvloop cuts the event loop's cost per request, a large part of a proxy hop on a small machine.
    p.add_argument(
        "--loop",
        default=kind.default_loop,
        choices=LOOPS,
        help=f"event loop (default {kind.default_loop}; auto: uvloop when installed, else asyncio)",
    )


def add_fault_args(p: argparse.ArgumentParser) -> None:
    """``--fault`` (repeatable), ``--accept-faults`` and ``--admin-token`` of a model server or emulated instance."""
    p.add_argument(
        "--fault",
        dest="faults",
        action="append",
        default=[],
        metavar="KIND@AT[:DURATION[:SIZE]]",
        help="inject a fault, AT seconds after start: spike@10s:5s:200ms (each query +200 ms for 5 s), "
        "stall@45s:5s (answer nothing for 5 s), error@5s:10s:503 (infer answers 503 for 10 s), "
        "exit@30s (crash); repeatable",
    )
    p.add_argument(
        "--accept-faults",
        action="store_true",
        help="also take faults at run time on POST /admin/fault (loopback, or with --admin-token)",
    )
    p.add_argument("--admin-token", default=None, help="accept admin calls from elsewhere with this bearer token")


def fault_config(args: argparse.Namespace) -> dict:
    """The fault fields of a server config from ``add_fault_args``' options."""
    return {
        "faults": tuple(parse_fault(text, "faults") for text in args.faults),
        "accept_faults": args.accept_faults,
        "admin_token": args.admin_token,
    }


def listen(args: argparse.Namespace) -> Listen:
    """The Listen of a subcommand's options."""
    return Listen(host=args.host, port=args.port, loop=args.loop)


# -- kairos serve model -----------------------------------------------------------------------------------------
def run_model(args) -> int:
    """``kairos serve model``."""
    models = tuple(m.strip() for text in args.models for m in text.split(",") if m.strip())
    config = ModelServerConfig(
        models=models or ModelServerConfig.models,
        model_dir=_path(args.model_dir),
        provider=args.provider,
        threads=args.threads,
        spin=args.spin,
        concurrency=args.concurrency,
        max_batch=args.max_batch,
        seed=args.seed,
        instance_type=args.instance_type,
        cpus=parse_cpus(args.cpus, "cpus") if args.cpus else (),
        **fault_config(args),
    )
    return serve(model_server.KIND, config, listen(args))


def add_model_parser(sub) -> None:
    """``kairos serve model``: an ONNX Runtime V2 server."""
    d = ModelServerConfig
    p = sub.add_parser(
        "model",
        help="serve ONNX models with ONNX Runtime (V2 REST protocol)",
        description="Serve one or more built-in models with ONNX Runtime over the V2 REST protocol. "
        "Models are built into --model-dir if missing.",
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME[,NAME...]",
        help=f"model(s) to serve (default {','.join(d.models)}); repeat or comma-separate",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="model cache directory (default $KAIROS_MODEL_DIR or ~/.cache/kairos-harness/models)",
    )
    p.add_argument(
        "--provider",
        choices=model_server.PROVIDERS,
        default=d.provider,
        help=f"execution provider (default {d.provider})",
    )
    p.add_argument("--threads", type=int, default=d.threads, help=f"ORT intra-op threads (default {d.threads})")
    p.add_argument(
        "--spin",
        action="store_true",
        help="let the intra-op threads spin-wait between runs (default off: it takes CPU from whatever shares the host)",
    )
    p.add_argument(
        "--concurrency", type=int, default=d.concurrency, help=f"inferences running at once (default {d.concurrency})"
    )
    p.add_argument("--max-batch", type=int, default=d.max_batch, help=f"largest batch accepted (default {d.max_batch})")
    p.add_argument(
        "--seed", type=int, default=d.seed, help=f"weight seed used when building a model (default {d.seed})"
    )
    p.add_argument("--instance-type", default=None, help="label reported in response parameters")
    p.add_argument(
        "--cpus",
        default=None,
        metavar="LIST",
        help="run every thread of the server on these cores, e.g. 1 or 2-3 (default: wherever the OS puts them)",
    )
    add_fault_args(p)
    add_listen_args(p, model_server.KIND)
    p.set_defaults(func=run_model)


# -- kairos serve emulated --------------------------------------------------------------------------------------
def run_emulated(args) -> int:
    """``kairos serve emulated``."""
    config = EmulatedConfig(
        instance_type=args.instance_type,
        model=args.model,
        profiles=_path(args.profiles),
        seed=args.seed,
        concurrency=args.concurrency,
        **fault_config(args),
    )
    return serve(emulated.KIND, config, listen(args))


def add_emulated_parser(sub) -> None:
    """``kairos serve emulated``: one profile-driven emulated instance."""
    d = EmulatedConfig
    p = sub.add_parser(
        "emulated",
        help="serve an emulated instance (profile-sampled service times)",
        description="Answer V2 infer requests like the model server, sleeping a service time "
        "sampled from a latency profile for (instance type, model, batch bucket).",
    )
    p.add_argument("--instance-type", required=True, help="profiled instance type, e.g. r5n.large")
    p.add_argument("--model", default=d.model, help=f"profiled model (default {d.model})")
    p.add_argument("--profiles", default=None, help="profile parquet/CSV (default: the shipped AWS profiles)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the service-time sampler (default {d.seed})")
    p.add_argument(
        "--concurrency", type=int, default=d.concurrency, help=f"queries served at once (default {d.concurrency})"
    )
    add_fault_args(p)
    add_listen_args(p, emulated.KIND)
    p.set_defaults(func=run_emulated)


# -- kairos serve pool ------------------------------------------------------------------------------------------
def run_pool(args) -> int:
    """``kairos serve pool``: start the pool, write the pool file, wait for Ctrl-C/SIGTERM, stop everything."""
    spec = PoolSpec(
        config=args.pool_config,
        model=args.model,
        mode=args.mode,
        profiles=_path(args.profiles),
        prices=_path(args.prices),
        seed=args.seed,
        concurrency=args.concurrency,
        model_dir=_path(args.model_dir),
        threads=args.threads,
        host=args.host,
        accept_faults=args.accept_faults,
        instances_per_process=args.instances_per_process,
        pin_cores=args.pin_cores,
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with start_pool(spec) as pool:
            path = pool.write(args.pool_file)
            print_ready(
                {
                    "kind": "pool",
                    "pool_file": str(path),
                    "model": pool.model,
                    "mode": spec.mode,
                    "instances": [i.to_json() for i in pool.instances],
                    "pid": os.getpid(),
                }
            )
            cores = pool.pinning.servers if pool.pinning else [()] * len(pool.instances)
            for inst, c in zip(pool.instances, cores):
                print(f"{inst.id:>20}  {inst.url}" + (f"  cores {format_cpus(c)}" if c else ""), file=sys.stderr)
            if pool.pinning:
                print(
                    f"servers pinned; run the load generator and dispatcher on the rest: taskset -c "
                    f"{format_cpus(pool.pinning.harness)} ...",
                    file=sys.stderr,
                )
            print(f"pool of {len(pool.instances)} written to {path}; Ctrl-C to stop", file=sys.stderr, flush=True)
            reported: set[str] = set()
            while not stop.wait(0.5):
                newly = [iid for iid in pool.dead() if iid not in reported]
                for iid in newly:
                    reported.add(iid)
                    print(
                        f"kairos serve pool: instance {iid} exited (code {pool.exit_code(iid)}); the others keep "
                        + ("serving; restarting it" if args.restart else "serving (--restart brings it back)"),
                        file=sys.stderr,
                        flush=True,
                    )
                if not args.restart:
                    continue
                for iid in newly:
                    if iid not in pool.dead():
                        continue  # back already: its process, restarted for another of its instances, hosts it
                    try:
                        pool.restart(iid)
                    except InputError as exc:  # it stays down; the others serve on
                        print(f"kairos serve pool: {iid} did not come back: {exc}", file=sys.stderr, flush=True)
                        continue
                    pool.write(args.pool_file)  # the new pid
                down = set(pool.dead())
                for inst in pool.instances:
                    if inst.id in reported and inst.id not in down:
                        reported.discard(inst.id)  # watched again
                        print(f"kairos serve pool: {inst.id} is back at {inst.url}", file=sys.stderr, flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_pool_parser(sub) -> None:
    """``kairos serve pool``: one process per instance (or per K emulated instances) of a configuration."""
    d = PoolSpec
    p = sub.add_parser(
        "pool",
        help="start one server process per instance and write a pool file",
        description="Start one emulated instance (or ONNX Runtime server) per instance of --config on "
        "loopback, one process each or --instances-per-process K to a process, write the pool file, and run until "
        "Ctrl-C/SIGTERM, then stop them all.",
    )
    p.add_argument("--config", dest="pool_config", required=True, help="instance mix, e.g. g4dn.xlarge=2,r5n.large=9")
    p.add_argument("--model", default=d.model, help=f"model (default {d.model})")
    p.add_argument(
        "--mode",
        choices=MODES,
        default=d.mode,
        help=f"emulated instances or ONNX Runtime CPU servers (default {d.mode})",
    )
    p.add_argument("--profiles", default=None, help="profile file for emulated instances (default: shipped)")
    p.add_argument("--prices", default=None, help="price CSV (default: shipped AWS prices)")
    p.add_argument(
        "--seed", type=int, default=d.seed, help=f"base seed; each instance derives its own (default {d.seed})"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help=f"queries each instance serves at once (default {d.concurrency})",
    )
    p.add_argument("--model-dir", default=None, help="model cache directory for --mode onnx")
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help=f"ORT intra-op threads per server for --mode onnx (default {d.threads})",
    )
    p.add_argument("--host", default=d.host, help=f"address the instances bind (default {d.host})")
    p.add_argument(
        "--pin-cores",
        action="store_true",
        help="--mode onnx: give each server threads x concurrency cores of its own, the highest-numbered first, "
        "leaving at least one for the load generator and dispatcher",
    )
    p.add_argument(
        "--instances-per-process",
        type=int,
        default=d.instances_per_process,
        metavar="K",
        help=f"--mode emulated: host K instances in each process, each on its own port with its own sampler, queue "
        f"and admin endpoints, on one event loop (hundreds fit on a small machine; a kill takes down all K); "
        f"default {d.instances_per_process}: one process per instance",
    )
    p.add_argument(
        "--accept-faults",
        action="store_true",
        help="instances take faults on POST /admin/fault from loopback (for chaos tests)",
    )
    p.add_argument("--pool-file", default="pool.json", help="where to write the pool file (default pool.json)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="start an instance that exits again, on its own address (default: report it; the others keep serving)",
    )
    p.set_defaults(func=run_pool)


# -- kairos serve dispatcher ------------------------------------------------------------------------------------
def run_dispatcher(args) -> int:
    """``kairos serve dispatcher``."""
    config = DispatcherConfig(
        pool=load_pool_file(args.pool, args.prices),
        policy=args.policy,
        qos_ms=args.qos_ms,
        profiles=_path(args.profiles),
        latency_alpha=args.latency_alpha,
        max_queue=args.max_queue,
        max_held_bytes=args.max_held_mib << 20,
        concurrency=args.concurrency,
        prefetch_ms=args.prefetch_ms,
        records_path=_path(args.records_path),
        admin_token=args.admin_token,
        max_retries=args.max_retries,
        eject_after_failures=args.eject_after_failures,
        max_ejected_fraction=args.max_ejected_fraction,
        queue_timeout_ms=args.queue_timeout_ms,
        seed=args.seed,
    )
    return serve(dispatcher.KIND, config, listen(args))


def add_dispatcher_parser(sub) -> None:
    """``kairos serve dispatcher``: the policy-driven proxy in front of a pool."""
    d = DispatcherConfig
    p = sub.add_parser(
        "dispatcher",
        help="run the dispatcher proxy in front of a pool",
        description="A V2 proxy with a central queue: each query is assigned to an instance of the "
        "pool by the same policy objects the simulator runs. Admin endpoints "
        "(/admin/policy, /admin/drain, /admin/status, /admin/flush) answer on loopback "
        "or with --admin-token; /metrics is Prometheus text.",
    )
    p.add_argument("--pool", required=True, help="pool file (written by `kairos serve pool`, or by hand)")
    p.add_argument("--policy", default=d.policy, help=f"policy NAME[:k=v] (default {d.policy})")
    p.add_argument(
        "--qos-ms", type=float, default=d.qos_ms, help="p99 target in ms (default: the paper's for the model)"
    )
    p.add_argument("--profiles", default=None, help="profile seeding the latency model (default: shipped)")
    p.add_argument("--prices", default=None, help="price CSV for pool entries without usd_per_hour")
    p.add_argument(
        "--latency-alpha",
        type=float,
        default=d.latency_alpha,
        help=f"weight of each observed service time in the online latency model (default "
        f"{d.latency_alpha}; 0: profile only)",
    )
    p.add_argument(
        "--max-queue", type=int, default=d.max_queue, help=f"central queue bound; beyond it 503 (default {d.max_queue})"
    )
    p.add_argument(
        "--max-held-mib",
        type=int,
        default=d.max_held_bytes >> 20,
        help=f"request bodies held at once, queued or in service; beyond it 503 (default {d.max_held_bytes >> 20})",
    )
    p.add_argument(
        "--concurrency", type=int, default=d.concurrency, help=f"queries per instance at once (default {d.concurrency})"
    )
    p.add_argument(
        "--prefetch-ms",
        type=float,
        default=d.prefetch_ms,
        help=f"send an instance its next query this long before its running one is predicted to end, "
        f"hiding the proxy's round trip (default {d.prefetch_ms:g}; 0: only when idle; needs "
        f"--concurrency 1)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=d.max_retries,
        help=f"retries of a query whose instance failed (default {d.max_retries})",
    )
    p.add_argument(
        "--eject-after-failures",
        type=int,
        default=d.eject_after_failures,
        help=f"take an instance out of service after this many failures in a row: 5xx, timeouts, dropped "
        f"connections; a refused connection ejects at once, a 4xx never (default {d.eject_after_failures})",
    )
    p.add_argument(
        "--max-ejected-fraction",
        type=float,
        default=d.max_ejected_fraction,
        help=f"never have more than this share of the pool out of service (default {d.max_ejected_fraction:g})",
    )
    p.add_argument(
        "--queue-timeout-ms",
        type=float,
        default=d.queue_timeout_ms,
        help="answer 504 to a query still queued this long after arrival (default: 10 x the QoS target)",
    )
    p.add_argument(
        "--records",
        dest="records_path",
        default=None,
        help="stream per-query records to this directory of parquet parts (readable with pandas.read_parquet at any time)",
    )
    p.add_argument("--admin-token", default=None, help="also accept admin calls from elsewhere with this bearer token")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of randomized policies (default {d.seed})")
    add_listen_args(p, dispatcher.KIND)
    p.set_defaults(func=run_dispatcher)


SUBCOMMANDS = [add_model_parser, add_emulated_parser, add_pool_parser, add_dispatcher_parser]


def register(subparsers) -> None:
    """Add ``kairos serve`` and its subcommands."""
    p = subparsers.add_parser(
        "serve",
        help="run model servers, emulated instances, a pool or the dispatcher",
        description="Run V2 inference servers on loopback.",
    )
    sub = p.add_subparsers(dest="serve_command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
