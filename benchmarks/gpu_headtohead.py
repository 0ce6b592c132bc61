"""GPU check: profile the five built-in models on ONNX Runtime's CUDA provider beside CPU servers, then run one live
head-to-head of the dispatchers on a real GPU + CPU pool.

Needs an NVIDIA GPU and the gpu extra (the CPU and GPU wheels install the same module, so swap them):
    pip uninstall -y onnxruntime && pip install -e '.[gpu]'
    python benchmarks/gpu_headtohead.py [--cpu-type cpu-4t] [--cpus 3] [--qos-ms 20] [--out reports/gpu]
        [--only profile|headtohead] [--samples 30] [--bucket-step 50] [--dispatchers a,b] [--max-phases N]
        [--gpu-type cuda]

On a lent device machine, where nothing can be installed from a registry, `benchmarks/gpu_carry.py` prepares the
wheels here and prints the calls that carry them there and run this script (`benchmarks/gpu_device.sh`).

Prints per model the mean service time at the smallest batch bucket measured, about 500 and 1000 on `cuda` and on
the CPU type (measured one server at a time, as `kairos profile` does), then runs
`locust -f harness/kairos_load.py --headless --mode onnx` on `cuda=1,<cpu-type>=<cpus>` for rm2 (the run profiles its
own servers first) and prints its allowable-throughput line. Exits 2, saying why, where ONNX Runtime has no CUDA
provider. Budget: about 5 minutes on a 16-core host; the device's cut (gpu_device.sh: --samples 10 --bucket-step 100
--dispatchers kairos,fcfs --max-phases 5) took 3 min 26 s on a 2-core VM with `--gpu-type cpu-1t` standing in.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

from harness.core.errors import InputError
from harness.core.profiles import Profile
from harness.live.local_profile import LocalProfileConfig, local_profile, pool_settings
from servers import models
from servers.host_types import CUDA_PROVIDER
from servers.pool import PoolSpec, start_pool


def profile_models(gpu_type: str, cpu_type: str, out: Path, samples: int, bucket_step: int) -> None:
    """Profile every built-in model on ``gpu_type`` and ``cpu_type``, one server at a time; print the means."""
    print(f"{'model':<7} {'batch':>6} {gpu_type + ' ms':>11} {cpu_type + ' ms':>11} {'speedup':>8}", flush=True)
    for model in models.MODEL_NAMES:
        spec = PoolSpec(f"{gpu_type}=1,{cpu_type}=1", model=model, mode="onnx")
        with start_pool(spec) as pool:
            config = LocalProfileConfig(
                contention="alone", samples=samples, warmup=5, bucket_step=bucket_step, refresh=True
            )
            info = local_profile(
                list(pool.instances),
                pool_settings(pool),
                model,
                1000,
                out / f"profile-{model}.parquet",
                config,
                log=lambda _: None,
            )
        profile = Profile.load(info["path"])
        # Buckets measured only: below the smallest, the profile answers with that bucket's time (batch 10 read as
        # batch 100's at --bucket-step 100).
        for batch in sorted({bucket_step, bucket_step * math.ceil(500 / bucket_step), 1000}):
            gpu, cpu = profile.mean_ms(gpu_type, model, batch), profile.mean_ms(cpu_type, model, batch)
            print(f"{model:<7} {batch:>6} {gpu:>11.2f} {cpu:>11.2f} {cpu / gpu:>7.1f}x", flush=True)
    print(f"# machine: {info['machine']}")


def main() -> int:
    """Profile, then the head-to-head; 2 where there is no CUDA provider."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--gpu-type",
        default="cuda",
        help="the accelerator's instance type (default cuda; a CPU type such as cpu-1t rehearses the whole script on a "
        "machine without a GPU, with that server standing in)",
    )
    ap.add_argument("--cpu-type", default="cpu-4t", help="the CPU instance type beside the GPU (default cpu-4t)")
    ap.add_argument("--cpus", type=int, default=3, help="CPU instances in the head-to-head pool (default 3)")
    ap.add_argument("--qos-ms", type=float, default=20.0, help="p99 target of the head-to-head (default 20)")
    ap.add_argument("--out", type=Path, default=Path("reports/gpu"))
    ap.add_argument("--only", choices=("profile", "headtohead"), help="one half (default both, profiles first)")
    ap.add_argument("--samples", type=int, default=30, help="timed queries per batch bucket when profiling")
    ap.add_argument("--bucket-step", type=int, default=50, help="batch buckets 50, 100, ... up to 1000 (default 50)")
    ap.add_argument("--dispatchers", help="the head-to-head's dispatchers (default the harness's three)")
    ap.add_argument("--max-phases", type=int, help="phases per dispatcher's sweep (default the harness's)")
    args = ap.parse_args()
    if args.gpu_type == args.cpu_type:
        ap.error(f"--gpu-type and --cpu-type are both {args.cpu_type}: the pool needs two instance types")
    import onnxruntime

    if args.gpu_type == "cuda" and CUDA_PROVIDER not in onnxruntime.get_available_providers():
        print(
            f"no {CUDA_PROVIDER} in this onnxruntime ({', '.join(onnxruntime.get_available_providers())}): "
            "pip uninstall -y onnxruntime && pip install -e '.[gpu]', on a machine with an NVIDIA GPU",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if args.only != "headtohead":
        profile_models(args.gpu_type, args.cpu_type, args.out, args.samples, args.bucket_step)
        print(f"# profiles in {time.monotonic() - t0:.0f} s under {args.out}", flush=True)
    if args.only == "profile":
        return 0
    cmd = [
        "locust", "-f", "harness/kairos_load.py", "--headless", "--mode", "onnx",
        "--pool-config", f"{args.gpu_type}=1,{args.cpu_type}={args.cpus}", "--model", "rm2",
        "--qos-ms", f"{args.qos_ms:g}", "--report-dir", str(args.out),
    ]  # fmt: skip
    if args.dispatchers:
        cmd += ["--dispatchers", args.dispatchers]
    if args.max_phases:
        cmd += ["--max-phases", str(args.max_phases)]
    print("# " + " ".join(cmd), flush=True)
    run = subprocess.run(cmd, capture_output=True, text=True)
    # The whole log beside the report: on a lent machine it is what comes back when the figures do not.
    (args.out / "headtohead.log").write_text(run.stdout + run.stderr, encoding="utf-8")
    lines = (run.stdout + run.stderr).splitlines()
    for line in lines:
        if "allowable throughput" in line or "HOST-LIMITED" in line or "report" in line:
            print(line)
    print(f"# exit {run.returncode}, {time.monotonic() - t0:.0f} s in all")
    return run.returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as exc:  # a server that would not start (its CUDA libraries missing): one line, not a trace
        sys.exit(f"gpu_headtohead: error: {exc}")
