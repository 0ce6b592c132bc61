"""Emulated reply timing: how far an emulated instance's replies land from the service time it sampled.

Starts one emulated instance (a process on a loopback port) and sends it queries one at a time on a kept-alive
connection, as ``kairos profile`` does. Each reply carries the sampled service time and when the instance woke
(``compute_ms``); this side times the round trip and an empty request's (``GET /v2/health/ready``). Per batch size it
prints the mean sampled time, the instance's wake-up against its due end (``wake-due``: negative when it woke early to
reply on time), and the round trip beyond the sampled time and an empty request's (``excess``, what a client such as
``kairos profile`` sees as extra service time).

Run: python benchmarks/emulated_timing.py [--instance-type r5n.large] [--model rm2] [--batches 10,20,50,100,1000]
[--samples 50] [--warmup 20] [--code-root DIR] (the instance runs another checkout's code, e.g. a ``git worktree`` of
an earlier commit, to compare).
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.live.profiler import parse_batches
from servers import models, v2
from servers.emulated import EmulatedConfig
from servers.process import spawn_server, stop_processes


def round_trip_ms(conn: http.client.HTTPConnection, method: str, path: str, body=None, headers=None):
    """(milliseconds, response headers, response body) of one request."""
    t0 = time.perf_counter()
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise SystemExit(f"{method} {path} answered {resp.status}: {data[:200]!r}")
    return (time.perf_counter() - t0) * 1e3, dict(resp.getheaders()), data


@dataclass(frozen=True)
class BatchTiming:
    """Means over one batch size's counted queries (milliseconds)."""

    batch_size: int
    sampled_ms: float
    wake_minus_due_ms: float  # the instance's wake-up against its service's due end (negative: early)
    excess_ms: float  # the round trip beyond the sampled time and an empty request's round trip


def measure(
    url: str, model: str, batches: tuple[int, ...], samples: int, warmup: int
) -> tuple[float, list[BatchTiming]]:
    """The empty request's median round trip and one BatchTiming per batch size, queries sent one at a time."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        empty = float(np.median([round_trip_ms(conn, "GET", "/v2/health/ready")[0] for _ in range(100)]))
        rng = np.random.default_rng(0)
        spec = models.get_spec(model)
        out = []
        for batch in batches:
            enc = v2.encode_infer_request(models.make_inputs(spec, batch, rng))
            rows = []
            for k in range(warmup + samples):
                ms, headers, body = round_trip_ms(
                    conn, "POST", f"/v2/models/{model}/infer", enc.body, dict(enc.headers)
                )
                length = int(headers.get(v2.HEADER_LENGTH, len(body)))
                p = json.loads(body[:length])["parameters"]
                if k >= warmup:
                    rows.append((p["sampled_ms"], p["queue_ms"] + p["compute_ms"] - p["sampled_ms"], ms - empty))
            sampled, wake, total = np.array(rows).mean(axis=0)
            out.append(BatchTiming(batch, float(sampled), float(wake), float(total - sampled)))
        return empty, out
    finally:
        conn.close()


def main() -> None:
    """Print, per batch size, the sampled time, the wake-up against the due end and the client-side excess."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance-type", default="r5n.large")
    ap.add_argument("--model", default="rm2")
    ap.add_argument("--batches", default="10,20,50,100,1000", help="comma list or START:STOP:STEP")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20, help="queries per batch size not counted (the instance learns)")
    ap.add_argument("--code-root", type=Path, default=None, help="run the instance from this checkout (default: this)")
    args = ap.parse_args()
    config = EmulatedConfig(args.instance_type, args.model)
    proc = spawn_server("emulated", config, name="emulated", code_root=args.code_root)
    try:
        empty, rows = measure(proc.url, args.model, parse_batches(args.batches), args.samples, args.warmup)
    finally:
        stop_processes([proc])
    code = args.code_root or "this checkout"
    print(f"# {args.instance_type} {args.model}, one emulated instance (code: {code}), queries one at a time")
    print(f"# host {platform.machine()}, Python {platform.python_version()}; empty request {empty:.3f} ms")
    print(f"{'batch':>6} {'sampled ms':>11} {'wake-due ms':>12} {'excess ms':>10} {'excess %':>9}")
    for r in rows:
        pct = 100 * r.excess_ms / r.sampled_ms
        print(
            f"{r.batch_size:>6} {r.sampled_ms:>11.2f} {r.wake_minus_due_ms:>+12.3f} {r.excess_ms:>+10.3f} {pct:>+8.1f}%"
        )


if __name__ == "__main__":
    main()
