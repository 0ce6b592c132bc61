"""Issue 10's profile check: ``kairos profile``'s capture against an emulated instance, whose service times are the
shipped profile's, per batch size, with the transport priced after a wait as long as the query's (the default) and
back to back, interleaved in the same run.

Run: python benchmarks/profile_check.py [--instance-type r5n.large] [--model rm2] [--batches 10,20,50,100,200,500,1000]
[--samples 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import platform

from harness.core.profiles import Profile
from harness.live.profiler import CaptureConfig, capture, parse_batches
from servers.emulated import EmulatedConfig
from servers.process import spawn_server, stop_processes


def errors_pct(url: str, instance_type: str, model: str, batches, samples: int, idle: bool, seed: int) -> list[float]:
    """Captured mean against the shipped profile's, per batch size (%)."""
    shipped = Profile.load()
    config = CaptureConfig(url, model, instance_type, batches=batches, samples=samples, idle_transport=idle, seed=seed)
    captured = Profile.from_frame(capture(config))
    return [
        100.0 * (captured.mean_ms(instance_type, model, b) / shipped.mean_ms(instance_type, model, b) - 1.0)
        for b in batches
    ]


def main(argv: list[str] | None = None) -> None:
    """Print one line per round and transport price."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance-type", default="r5n.large")
    ap.add_argument("--model", default="rm2")
    ap.add_argument("--batches", default="10,20,50,100,200,500,1000")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    batches = parse_batches(args.batches)
    proc = spawn_server("emulated", EmulatedConfig(args.instance_type, args.model), name="emulated")
    try:
        print(f"# {platform.machine()}; {args.instance_type} {args.model}, {args.samples} samples a batch size")
        print(f"{'transport':<13}" + "".join(f"{'b' + str(b):>8}" for b in batches))
        for rnd in range(args.rounds):
            for idle, name in ((False, "back to back"), (True, "after a wait")):
                errs = errors_pct(proc.url, args.instance_type, args.model, batches, args.samples, idle, rnd)
                print(f"{name:<13}" + "".join(f"{e:+7.1f}%" for e in errs), flush=True)
    finally:
        stop_processes([proc])


if __name__ == "__main__":
    main()
