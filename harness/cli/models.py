"""``kairos models``: build the built-in ONNX recommendation models, list them, or print their documentation."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from servers import models

DOC_HEADER = """# Built-in recommendation models

DeepRecSys-style models built as ONNX graphs (opset {opset}) with seeded random weights; nothing is downloaded.
Build them with `kairos models build [--out DIR] [--models rm2,ncf] [--force]` (default directory
`$KAIROS_MODEL_DIR`, else `~/.cache/kairos-harness/models`); a file is rebuilt only when its spec hash (shapes,
seed, builder version) changes. `kairos serve model` builds what it needs on startup.

The batch is the first, dynamic dimension of every input and output (`-1` in V2 metadata), so a request of batch
`B` sends e.g. `dense` as `[B, 13]`. Integer inputs are ids in `[0, high)`; `servers.models.make_inputs(spec, B, rng)`
draws valid ones. FLOPs count multiplies and adds separately (a dense layer `i -> o` is `2*i*o`) and include
embedding pooling, GRU gate matmuls, interaction and attention dot products; bias adds, activations and gathers are
not counted. Tables have 10k rows so files stay small (2.5-11 MiB) and build in well under a second: these are
structural stand-ins, not the production sizes behind the shipped latency profiles (which emulated instances use).

This file is generated: `kairos models doc --out docs/models.md`.

"""


DOC_SERVING = """
## Serving them

- `kairos serve model --model rm2 [--model-dir DIR] [--provider cpu|cuda] [--threads 1] [--concurrency 1]
  [--max-batch 1000] [--port 0]`: ONNX Runtime behind the KServe V2 REST protocol (`/v2/health/live`,
  `/v2/health/ready`, `/v2/models/{name}`, `/v2/models/{name}/ready`, `POST /v2/models/{name}/infer`), JSON or
  binary tensors (tritonclient works as is). Response `parameters`: `queue_ms`, `compute_ms`, `batch_size`.
- `kairos serve emulated --instance-type r5n.large --model rm2 [--profiles P] [--seed S] [--concurrency 1]`: the
  same API and validation (from the specs above, no ONNX file needed), but each query sleeps a service time sampled
  from the latency profile for (type, model, batch bucket) (a query that waited starts at its predecessor's due end,
  so back-to-back queries do not drift with the host's CPU load); answers zeros of the right shapes, plus `sampled_ms` and
  `instance_type` in `parameters`. Batches above the profile's largest bucket are refused (400).
- `kairos serve pool --config g4dn.xlarge=2,r5n.large=9 --model rm2 [--mode emulated|onnx] --pool-file pool.json`:
  one process per instance on loopback, a pool file
  `{"model": ..., "instances": [{"id", "url", "instance_type", "usd_per_hour", "pid"}, ...]}`, and everything
  stopped on Ctrl-C/SIGTERM. A hand-written pool file needs `model` and, per instance, `url` and `instance_type`
  (`id` defaults to `TYPE-k`, `usd_per_hour` to the shipped price).

Each server prints one `READY {"url": ..., "port": ..., "pid": ...}` line on stdout once it listens (`--port 0`
picks a free port). Errors are JSON `{"error": "..."}` with 400 (bad input, batch too large), 404 (unknown model)
or 413 (body above the limit, sized for the largest batch even as JSON).
"""


def doc_text() -> str:
    """The full docs/models.md text, generated from the specs."""
    parts = [DOC_HEADER.format(opset=models.OPSET), models.markdown_table(), "", "## Models", ""]
    for name in models.MODEL_NAMES:
        parts.append(f"- `{name}`: {models.get_spec(name).description}.")
    return "\n".join(parts) + "\n" + DOC_SERVING


def _names(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()] or list(models.MODEL_NAMES)
    for n in names:
        models.get_spec(n)
    return names


def run_build(args) -> int:
    """``kairos models build``."""
    out = Path(args.out) if args.out else models.default_model_dir()
    for name in _names(",".join(args.models) if args.models else None):
        t0 = time.perf_counter()
        path = models.build_model(name, out, seed=args.seed, force=args.force)
        print(f"{name:6} {path}  ({path.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.2f} s)")
    return 0


def run_list(args) -> int:
    """``kairos models list``."""
    for name in models.MODEL_NAMES:
        s = models.get_spec(name)
        ins = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in s.inputs)
        outs = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in s.outputs)
        print(f"{name:6} params {s.params:>10,}  FLOPs/sample {s.flops_per_sample:>9,}  in: {ins}  out: {outs}")
    return 0


def run_doc(args) -> int:
    """``kairos models doc``."""
    text = doc_text()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def register(subparsers) -> None:
    """Add ``kairos models {build,list,doc}``."""
    p = subparsers.add_parser(
        "models",
        help="build/list the built-in ONNX recommendation models",
        description="Build, list or document the built-in ONNX recommendation models.",
    )
    sub = p.add_subparsers(dest="models_command", required=True)
    b = sub.add_parser("build", help="build model files (cached by spec hash)")
    b.add_argument(
        "--out", default=None, help="directory (default $KAIROS_MODEL_DIR or ~/.cache/kairos-harness/models)"
    )
    b.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"models to build (default all: {' '.join(models.MODEL_NAMES)}); comma lists accepted",
    )
    b.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    b.add_argument("--force", action="store_true", help="rebuild even if an up-to-date file exists")
    b.set_defaults(func=run_build)
    ls = sub.add_parser("list", help="print each model's inputs, outputs, parameters and FLOPs")
    ls.set_defaults(func=run_list)
    d = sub.add_parser("doc", help="print docs/models.md (generated from the specs)")
    d.add_argument("--out", default=None, help="write to this file instead of stdout")
    d.set_defaults(func=run_doc)
