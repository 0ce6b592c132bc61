"""``kairos trace``: generate, import, rescale and describe traces.

kairos trace generate --queries N --rate QPS [--arrivals SPEC] [--batch-mix SPEC] [--model M] [--seed S] --out FILE
kairos trace import --format FMT FILE [--model M] [--size-field F] [--divisor X] [--min-batch N]
                    [--max-batch N] [--round-to N] [--rate QPS] --out FILE
kairos trace scale FILE (--rate QPS [--scale time|thin|superpose] [--seed S] | --speedup X) --out FILE
kairos trace info FILE [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np

from harness.core.errors import InputError
from harness.core.jsonable import dumps
from traces.generate import ARRIVALS, BATCH_MIXES, generate_trace
from traces.importers import DEFAULT_MAPPINGS, IMPORTERS, import_trace
from traces.io import SUFFIXES, read_trace, write_trace
from traces.scale import gap_cv, scale_to_rate, speedup
from traces.scalers import DEFAULT_SCALE, SCALERS, check_scale, scale_trace
from traces.schema import Trace, TraceError

PERCENTILES = (50, 90, 99)


def summarize(trace: Trace) -> dict:
    """Queries, duration, mean rate, burstiness (gap CV), batch-size percentiles and per-model counts."""

    def finite(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None  # JSON has no inf/NaN

    sizes = trace.batch_size
    models, counts = np.unique(trace.model.astype(str), return_counts=True)
    return {
        "source": trace.source,
        "queries": len(trace),
        "duration_s": trace.duration_s,
        "mean_rate_qps": finite(trace.mean_rate_qps),
        "gap_cv": finite(gap_cv(trace.arrival_s)),
        "batch_size": {
            "min": int(sizes.min()),
            "mean": float(sizes.mean()),
            **{f"p{q}": float(np.percentile(sizes, q)) for q in PERCENTILES},
            "max": int(sizes.max()),
        },
        "models": {str(m): int(c) for m, c in zip(models, counts)},
        "columns": list(trace.to_frame().columns),
    }


def _format_summary(info: dict) -> str:
    """The human-readable form of ``summarize``."""

    def num(x, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    b = info["batch_size"]
    pct = "  ".join(f"p{q} {b[f'p{q}']:g}" for q in PERCENTILES)
    models = ", ".join(f"{m} ({c})" for m, c in info["models"].items())
    return "\n".join(
        [
            f"trace       {info['source']}",
            f"queries     {info['queries']}",
            f"duration    {info['duration_s']:.3f} s",
            f"mean rate   {num(info['mean_rate_qps'], '.3f')} qps",
            f"burstiness  {num(info['gap_cv'], '.3f')} (CV of inter-arrival gaps; Poisson = 1)",
            f"batch size  min {b['min']}  mean {b['mean']:.1f}  {pct}  max {b['max']}",
            f"models      {models}",
            f"columns     {', '.join(info['columns'])}",
        ]
    )


def _check_out(path: str) -> None:
    """Fail before any work when the output suffix cannot be written."""
    if not path.lower().endswith(SUFFIXES):
        raise TraceError(f"{path}: unsupported trace format (use {' or '.join(SUFFIXES)})")


def _wrote(trace: Trace, path: str) -> None:
    """One line saying what was written where."""
    rate = trace.mean_rate_qps
    rate_text = f"{rate:.3f} qps" if math.isfinite(rate) else "single instant"
    print(f"wrote {len(trace)} queries ({trace.duration_s:.3f} s, {rate_text}) to {path}")


def run_generate(args: argparse.Namespace) -> int:
    """``kairos trace generate``."""
    _check_out(args.out)
    trace = generate_trace(
        args.queries,
        args.rate,
        arrivals=args.arrivals,
        batch_mix=args.batch_mix,
        model=args.model,
        rng=np.random.default_rng(args.seed),
    )
    write_trace(trace, args.out)
    _wrote(trace, args.out)
    return 0


def run_import(args: argparse.Namespace) -> int:
    """``kairos trace import``."""
    _check_out(args.out)
    overrides = {
        "field": args.size_field,
        "divisor": args.divisor,
        "min_batch": args.min_batch,
        "max_batch": args.max_batch,
        "round_to": args.round_to,
    }
    mapping = dataclasses.replace(
        DEFAULT_MAPPINGS[args.format], **{k: v for k, v in overrides.items() if v is not None}
    )
    trace = import_trace(args.format, args.file, mapping, model=args.model)
    if args.rate is not None:
        trace = scale_to_rate(trace, args.rate)
    write_trace(trace, args.out)
    print(f"size mapping: {mapping.describe()}")
    _wrote(trace, args.out)
    return 0


def run_scale(args: argparse.Namespace) -> int:
    """``kairos trace scale``."""
    _check_out(args.out)
    trace = read_trace(args.file)
    method = check_scale(args.scale)
    if args.speedup is not None and method != "time":
        raise InputError(f"--speedup plays the trace faster: use --rate with --scale {method}", field="scale")
    if args.rate is not None:
        trace = scale_trace(trace, args.rate, method, seed=args.seed, queries=args.queries)
    else:
        trace = speedup(trace, args.speedup)
    write_trace(trace, args.out)
    _wrote(trace, args.out)
    return 0


def run_info(args: argparse.Namespace) -> int:
    """``kairos trace info``."""
    info = summarize(read_trace(args.file))
    print(dumps(info) if args.json else _format_summary(info))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the trace sub-subcommand."""
    return args.trace_func(args)


def register(subparsers) -> None:
    """Add ``kairos trace`` and its sub-subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "trace", help="generate, import, rescale and describe query traces", description=__doc__.splitlines()[0]
    )
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="trace_command", required=True, metavar="{generate,import,scale,info}")

    gen = sub.add_parser("generate", help="a synthetic trace from an arrival process and a batch mix")
    gen.add_argument("--queries", type=int, required=True, help="number of queries")
    gen.add_argument("--rate", type=float, required=True, help="mean arrival rate (queries per second)")
    gen.add_argument("--arrivals", default="poisson", help=f"arrival process: {', '.join(ARRIVALS)}")
    gen.add_argument("--batch-mix", default="kairos", help=f"batch-size mix: {', '.join(BATCH_MIXES)}")
    gen.add_argument("--model", default="rm2", help="model of every query (default rm2)")
    gen.add_argument("--seed", type=int, default=0, help="seed of numpy.random.default_rng (default 0)")
    gen.add_argument("--out", required=True, help="output trace (.parquet or .csv)")
    gen.set_defaults(trace_func=run_generate)

    imp = sub.add_parser(
        "import",
        help="convert a public production trace to the harness schema",
        description="Sizes map to batches as clip(ceil(field / divisor / round_to) * round_to, "
        "min_batch, max_batch); defaults per format are in traces.importers.",
    )
    imp.add_argument("file", help="source trace file")
    imp.add_argument("--format", required=True, choices=list(IMPORTERS), help="source format")
    imp.add_argument("--model", default="rm2", help="model of every query (default rm2)")
    imp.add_argument("--size-field", help="size field (tokens_in, tokens_out, tokens_total; duration_ms)")
    imp.add_argument("--divisor", type=float, help="field units per batch item")
    imp.add_argument("--min-batch", type=int, help="smallest batch (default 1)")
    imp.add_argument("--max-batch", type=int, help="largest batch (default 1000)")
    imp.add_argument("--round-to", type=int, help="round batches up to a multiple of this (default 10)")
    imp.add_argument("--rate", type=float, help="rescale the time axis to this mean rate (qps)")
    imp.add_argument("--out", required=True, help="output trace (.parquet or .csv)")
    imp.set_defaults(trace_func=run_import)

    scl = sub.add_parser(
        "scale",
        help="bring a trace to a rate: compress its time axis, thin it or superpose copies",
        description="--scale time (default) compresses or stretches the time axis (bursts stay together at any "
        "rate); thin keeps a random subset and superpose merges time-shifted copies, each keeping per-window "
        "burstiness (README: Scaling).",
    )
    scl.add_argument("file", help="input trace (.parquet or .csv)")
    how = scl.add_mutually_exclusive_group(required=True)
    how.add_argument("--rate", type=float, help="target mean rate (qps)")
    how.add_argument("--speedup", type=float, help="play this many times faster (time scaling)")
    scl.add_argument(
        "--scale",
        default=DEFAULT_SCALE,
        metavar="{" + ",".join(SCALERS) + "}",  # checked by check_scale, so a bad one reads as the library says
        help=f"how the rate is reached (default {DEFAULT_SCALE})",
    )
    scl.add_argument("--seed", type=int, default=0, help="seed of thin/superpose's random choices (default 0)")
    scl.add_argument("--queries", type=int, help="cut the result to its first this many queries")
    scl.add_argument("--out", required=True, help="output trace (.parquet or .csv)")
    scl.set_defaults(trace_func=run_scale)

    info = sub.add_parser("info", help="queries, duration, rate, burstiness, batch sizes, models")
    info.add_argument("file", help="trace (.parquet or .csv)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(trace_func=run_info)
