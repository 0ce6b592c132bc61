"""``kairos profile``: measure a running V2 server's service time per batch size into a profile file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.core.profiles import Profile
from harness.live.host import CpuSnapshot, outside_cpu
from harness.live.profiler import CaptureConfig, capture, merge_into, parse_batches
from harness.live.run_dir import replace_file
from harness.measure.fidelity import busy_host

DEFAULT_BATCHES = "10:1000:10"


def register(subparsers) -> None:
    """Add ``kairos profile``."""
    d = CaptureConfig
    p = subparsers.add_parser(
        "profile",
        help="measure a running V2 server's latency per batch size into a profile file",
        description="Send one query at a time to a V2 server (this project's, Triton, MLServer), discard warm-up "
        "queries, and write compute and load time per sample in the profile schema that kairos simulate, "
        "allocate, the dispatcher and the harness read (--profiles). An existing --out file is merged: the "
        "measured (type, model, batch) rows replace its old ones.",
    )
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--instance-type", required=True, help="the label these samples get, e.g. r5n.large or cpu-2t")
    p.add_argument(
        "--batches", default=DEFAULT_BATCHES, help=f"START:STOP:STEP or a comma list (default {DEFAULT_BATCHES})"
    )
    p.add_argument("--samples", type=int, default=20, help="timed queries per batch size (default 20)")
    p.add_argument(
        "--warmup", type=int, default=d.warmup, help=f"discarded queries per batch size (default {d.warmup})"
    )
    p.add_argument(
        "--keep-transport",
        action="store_true",
        help="keep the transport in the samples (default: subtracted, it is the network's: an empty request's "
        "round trip after a wait as long as the query took)",
    )
    p.add_argument("--timeout-s", type=float, default=d.timeout_s, help=f"per request (default {d.timeout_s:g})")
    p.add_argument("--out", required=True, help="profile parquet to write or merge into")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kairos profile``."""
    config = CaptureConfig(
        url=args.url.rstrip("/"),
        model=args.model,
        instance_type=args.instance_type,
        batches=parse_batches(args.batches),
        samples=args.samples,
        warmup=args.warmup,
        timeout_s=args.timeout_s,
        keep_transport=args.keep_transport,
    )
    out = Path(args.out)
    total, done, t0 = len(config.batches), [0], time.monotonic()

    def progress(batch: int, n: int, mean_ms: float) -> None:
        done[0] += 1
        eta = (time.monotonic() - t0) / done[0] * (total - done[0])
        print(
            f"[{done[0]}/{total}] batch {batch}: {n} samples, mean {mean_ms:.2f} ms (about {eta:.0f} s left)",
            file=sys.stderr,
            flush=True,
        )

    before = CpuSnapshot.take([], every_process=False)
    captured = capture(config, progress)
    # The hypervisor's steal on this host while it timed the server: past the self-checks' limit, the samples may
    # read slow (the server's too, where it runs here).
    busy = busy_host(outside_cpu(before, CpuSnapshot.take([], every_process=False)))
    merged = merge_into(out, captured)
    Profile.from_frame(merged, source=str(out))  # what is written must read back
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_file(out, lambda tmp: merged.to_parquet(tmp, index=False))
    print(f"{len(captured)} samples of {config.model} on {config.instance_type} ({total} batch sizes) -> {out}")
    if busy:
        print(f"warning: {busy} during the capture, so its latencies may read slow: capture again on a quieter host")
    return 0
