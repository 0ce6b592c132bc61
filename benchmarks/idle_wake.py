"""What a query costs after its server idled: one pinned ONNX Runtime server, one client on another core.

Starts ``kairos serve model`` pinned to one core (``--server-cpu``, default the highest this process may use), pins
this process to another (``--client-cpu``, default the lowest), and times queries of each batch size sent after
waits of each gap (0: back to back), interleaved round by round so a drift of the host touches every gap alike. Per
batch and gap it prints the median round trip and the server's own ``compute_ms`` against back to back: what a
back-to-back profile misses for a query that finds its server idle (docs/measurements.md, pinned servers).

Run: python benchmarks/idle_wake.py [--model dien] [--batches 10,100,500,1000] [--gaps-ms 0,2,8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from servers import models, v2
from servers.cpu_affinity import available_cpus, pin_process
from servers.model_server import ModelServerConfig
from servers.process import ServerProcess, stop_processes, wait_healthy


@dataclass(frozen=True)
class Sample:
    """One timed query: its batch, the wait before it, the round trip and the server's compute (ms)."""

    batch: int
    gap_ms: float
    e2e_ms: float
    compute_ms: float


def summarize(samples: list[Sample]) -> pd.DataFrame:
    """Per (batch, gap): medians, and each against the same batch back to back (pure)."""
    frame = pd.DataFrame(samples)
    out = frame.groupby(["batch", "gap_ms"], as_index=False)[["e2e_ms", "compute_ms"]].median()
    base = out[out["gap_ms"] == 0.0].set_index("batch")
    out["e2e_vs_back_to_back"] = out["e2e_ms"] / out["batch"].map(base["e2e_ms"]) - 1.0
    out["compute_vs_back_to_back"] = out["compute_ms"] / out["batch"].map(base["compute_ms"]) - 1.0
    return out


def measure(url: str, model: str, batches, gaps_ms, rounds: int, samples: int, seed: int = 0) -> list[Sample]:
    """Time ``samples`` queries per (batch, gap) per round against the server at ``url``."""
    rng = np.random.default_rng(seed)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    path = f"/v2/models/{model}/infer"
    out = []

    def one(enc) -> tuple[float, float]:
        t0 = time.perf_counter()
        conn.request("POST", path, body=enc.body, headers=dict(enc.headers))
        resp = conn.getresponse()
        body = resp.read()
        e2e_ms = (time.perf_counter() - t0) * 1e3
        params = v2.decode_infer_response(body, dict(resp.getheaders())).parameters
        return e2e_ms, float(params["compute_ms"])

    try:
        for batch in batches:
            enc = v2.encode_infer_request(models.make_inputs(models.get_spec(model), batch, rng))
            for _ in range(5):  # warm-up
                one(enc)
            for _ in range(rounds):
                for gap in gaps_ms:
                    for _ in range(samples):
                        if gap:
                            time.sleep(gap / 1e3)
                        out.append(Sample(batch, float(gap), *one(enc)))
    finally:
        conn.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Start the pinned server, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dien")
    parser.add_argument("--batches", default="10,100,500,1000")
    parser.add_argument("--gaps-ms", default="0,2,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=25, help="per batch, gap and round")
    parser.add_argument("--server-cpu", type=int, default=None)
    parser.add_argument("--client-cpu", type=int, default=None)
    args = parser.parse_args(argv)
    cpus = available_cpus()
    if len(cpus) < 2:
        parser.error(f"needs two cores this process may use, has {len(cpus)}")
    server_cpu = cpus[-1] if args.server_cpu is None else args.server_cpu
    client_cpu = cpus[0] if args.client_cpu is None else args.client_cpu
    batches = [int(b) for b in args.batches.split(",")]
    gaps = [float(g) for g in args.gaps_ms.split(",")]
    if 0.0 not in gaps:
        gaps = [0.0, *gaps]
    server = ServerProcess("model", ModelServerConfig(models=(args.model,), cpus=(server_cpu,)), name="model")
    before = None
    try:
        server.wait_ready(120)
        wait_healthy(server.url, 60)
        before = pin_process((client_cpu,))
        table = summarize(measure(server.url, args.model, batches, gaps, args.rounds, args.samples))
    finally:
        if before is not None:
            pin_process(before)
        stop_processes([server])
    print(f"{args.model}: server on core {server_cpu}, client on core {client_cpu}; medians, against back to back")
    for r in table.itertuples():
        print(
            f"batch {r.batch:>5}  gap {r.gap_ms:>5g} ms: round trip {r.e2e_ms:7.2f} ms ({r.e2e_vs_back_to_back:+.0%}),"
            f" compute {r.compute_ms:7.2f} ms ({r.compute_vs_back_to_back:+.0%})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
