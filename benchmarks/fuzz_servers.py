"""Bad input at scale: thousands of malformed V2 requests to the three servers as real processes; no 5xx, no crash,
no lasting memory growth.

Starts an ONNX model server (rm2), an emulated instance (rm2) and a dispatcher in front of two emulated instances,
each its own process (``servers.process.spawn_server``; the emulated ones on a tiny profile written here, so nothing
sleeps). A seeded numpy Generator breaks valid requests one part at a time: JSON fields and tensor values, binary
lengths, URLs (model, version), headers (X-Request-ID, Inference-Header-Content-Length, Content-Encoding), plus raw
bytes. After a warm-up round each process's resident memory (``VmRSS`` in ``/proc/PID/status``) is read, the fuzzed
requests are sent (a few at a time per server), and it is read again. Printed per server: requests, count by status,
5xx, whether the process exited, RSS before and after (the dispatcher's instances too).

``tests/servers/test_fuzz_processes.py`` runs ``run()`` and asserts on its report.

Run: python benchmarks/fuzz_servers.py [--requests 600] [--warmup 200] [--seed 0] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import platform
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pandas as pd

from servers import models, v2
from servers.dispatcher import DispatcherConfig
from servers.emulated import EmulatedConfig
from servers.model_server import ModelServerConfig
from servers.pool_file import Instance, PoolFile
from servers.process import ServerProcess, spawn_server, stop_processes

MODEL = "rm2"
ITYPE = "fuzz.x"
LIMIT = 16  # every server's batch limit: the model server's max_batch, the profile's largest bucket
SERVERS = ("onnx", "emulated", "dispatcher")


# -- malformed requests ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One request to send: path, headers, body, and which part is broken."""

    path: str
    headers: dict[str, str]
    body: bytes
    what: str


JUNK = [None, True, -1, 2**63, 1.7, 1e300, "", "x", [], {}, [[1], [2, 3]], {"a": 1}]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def malformed(rng: np.random.Generator, n: int) -> list[Request]:
    """``n`` requests for MODEL, each valid but for one broken part (or not a request at all)."""
    spec = models.get_spec(MODEL)
    path = f"/v2/models/{MODEL}/infer"
    out = []
    for _ in range(n):
        x = models.make_inputs(spec, int(rng.integers(1, 5)), rng)
        what = _pick(
            rng, ["json-field", "json-value", "binary", "url", "header-length", "encoding", "request-id", "raw"]
        )
        headers: dict[str, str] = {}
        if what == "json-field":
            doc = orjson.loads(v2.encode_infer_request(x, binary=False).body)
            item = _pick(rng, doc["inputs"])
            key = _pick(rng, ["name", "datatype", "shape", "data", "parameters"])
            item[key] = _pick(rng, [v for v in JUNK[1:] if key != "parameters" or not isinstance(v, dict)])
            body = orjson.dumps(doc)
        elif what == "json-value":
            doc = orjson.loads(v2.encode_infer_request(x, binary=False).body)
            item = doc["inputs"][int(rng.integers(len(doc["inputs"])))]
            k = int(rng.integers(len(item["data"])))
            ids = item["datatype"] == "INT64"
            item["data"][k] = _pick(rng, [10_000, -1, 1.7, 1.0, "3", None] if ids else [3.5e38, "x", None, [1, 2]])
            body = orjson.dumps(doc)
        elif what in ("binary", "header-length"):
            enc = v2.encode_infer_request(x)
            body, headers = enc.body, dict(enc.headers)
            hl = int(headers[v2.HEADER_LENGTH])
            if what == "header-length":
                headers[v2.HEADER_LENGTH] = _pick(rng, [str(hl - 1), str(hl + 3), "-5", "abc", "", str(2**64), "1e3"])
            else:
                cut = int(rng.integers(1, 64))
                body = _pick(rng, [body[:-cut], body + bytes(cut), body[: hl + cut]])
        elif what == "url":
            enc = v2.encode_infer_request(x)
            body, headers = enc.body, dict(enc.headers)
            path = _pick(
                rng,
                [
                    "/v2/models/nope/infer",
                    f"/v2/models/{MODEL}/versions/2/infer",
                    f"/v2/models/{MODEL}/versions/latest/infer",
                    f"/v2/models/{MODEL.upper()}/infer",
                    f"/v2/models/{MODEL}/infer/x",
                ],
            )
        elif what == "encoding":
            raw = v2.encode_infer_request(x, binary=False).body
            coding, body = _pick(
                rng,
                [
                    ("gzip", raw),
                    ("gzip", gzip.compress(raw)[:-10]),
                    ("deflate", zlib.compress(raw)[: len(raw) // 3]),
                    ("deflate", b"x"),
                    ("br", raw),
                    ("zstd", raw),
                    ("gzip", gzip.compress(b" " * (4 << 20))),  # 4 MiB of spaces: a small bomb
                ],
            )
            headers["Content-Encoding"] = coding
        elif what == "request-id":
            doc = orjson.loads(v2.encode_infer_request(x, binary=False).body)
            doc["inputs"][0]["shape"][0] = LIMIT + int(rng.integers(1, 100))  # still malformed: the id is extra
            body = orjson.dumps(doc)
            headers["X-Request-ID"] = _pick(rng, ["\t", "a" * 300, "é" * 257, "\u2028", "ok-id"])
        else:
            body = _pick(
                rng,
                [
                    rng.bytes(int(rng.integers(0, 2000))),
                    b"[" * int(rng.integers(100, 5000)),
                    b'{"inputs": [{"name": "dense", "shape": [1099511627776, 1099511627776], "datatype": "FP32"}]}',
                    b'{"inputs": [{"name": "dense", "shape": [0, 4294967296, 4294967296], "datatype": "FP32", '
                    b'"data": []}]}',
                ],
            )
        if rng.random() < 0.3:
            headers["Content-Type"] = _pick(rng, ["application/json", "text/plain", "multipart/form-data", "x/y"])
        out.append(Request(path, headers, body, what))
        path = f"/v2/models/{MODEL}/infer"
    return out


# -- the servers -----------------------------------------------------------------------------------------------------
def vm_rss_kb(pid: int) -> int | None:
    """Resident memory of process ``pid`` in KiB (``VmRSS``), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass
class Stack:
    """The servers under test: name -> process; the dispatcher's instances under ``instances``."""

    servers: dict[str, ServerProcess]
    instances: list[ServerProcess] = field(default_factory=list)

    def all(self) -> dict[str, ServerProcess]:
        """Every process, the dispatcher's instances included."""
        return {**self.servers, **{f"dispatcher/{p.name}": p for p in self.instances}}

    def stop(self) -> None:
        """Stop every process."""
        stop_processes([*self.servers.values(), *self.instances])


def start_stack(tmp: Path, model_dir: Path | None) -> Stack:
    """Start the model server, an emulated instance, and a dispatcher with two emulated instances behind it."""
    profile = tmp / "tiny.parquet"
    pd.DataFrame(
        {"instance_type": ITYPE, "model": MODEL, "batch_size": [8, 8, LIMIT, LIMIT], "compute_ms": 0.05, "load_ms": 0.0}
    ).to_parquet(profile)
    started: list[ServerProcess] = []
    try:

        def spawn(kind: str, config, name: str) -> ServerProcess:
            proc = spawn_server(kind, config, name=name, timeout=120.0)
            started.append(proc)
            return proc

        onnx = spawn("model", ModelServerConfig(models=(MODEL,), model_dir=model_dir, max_batch=LIMIT), "onnx")
        emulated = spawn("emulated", EmulatedConfig(ITYPE, MODEL, profiles=profile), "emulated")
        behind = [
            spawn("emulated", EmulatedConfig(ITYPE, MODEL, profiles=profile, seed=k), f"{ITYPE}-{k}") for k in (0, 1)
        ]
        pool = PoolFile(MODEL, tuple(Instance(p.name, p.url, ITYPE, 0.1, p.pid) for p in behind))
        config = DispatcherConfig(pool, qos_ms=500.0, profiles=profile, records_path=tmp / "records")
        dispatcher = spawn("dispatcher", config, "dispatcher")
    except BaseException:
        stop_processes(started)
        raise
    return Stack({"onnx": onnx, "emulated": emulated, "dispatcher": dispatcher}, behind)


# -- sending ---------------------------------------------------------------------------------------------------------
@dataclass
class ServerReport:
    """What one server answered, and its process's memory."""

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # transport errors: no answer at all
    exited: bool = False
    rss_before_kb: int | None = None
    rss_after_kb: int | None = None

    @property
    def server_errors(self) -> int:
        """Answers 500 and above."""
        return sum(n for s, n in self.statuses.items() if s >= 500)


async def _send(session: aiohttp.ClientSession, base: str, requests: list[Request], report: ServerReport, width: int):
    queue = list(reversed(requests))

    async def worker():
        while queue:
            r = queue.pop()
            try:
                async with session.post(base + r.path, data=r.body, headers=r.headers) as resp:
                    body = await resp.read()
                    ok = resp.status < 400 or (resp.content_type == "application/json" and b'"error"' in body)
                    status = resp.status if ok else -resp.status  # negative: a 4xx without a JSON error
            except (aiohttp.ClientError, TimeoutError) as exc:
                report.failures.append(f"{r.what}: {type(exc).__name__}: {exc}")
                continue
            report.requests += 1
            report.statuses[status] += 1
            report.by_kind.setdefault(r.what, Counter())[status] += 1

    await asyncio.gather(*(worker() for _ in range(width)))


async def _fuzz(stack: Stack, batches: dict[str, list[Request]], reports: dict[str, ServerReport], width: int):
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        await asyncio.gather(
            *(_send(session, stack.servers[s].url, batches[s], reports[s], width) for s in SERVERS if s in batches)
        )


@dataclass
class Report:
    """Per server (and per dispatcher instance, memory only): answers and memory; the wall time."""

    servers: dict[str, ServerReport]
    seconds: float


def run(
    requests: int = 600, warmup: int = 200, seed: int = 0, concurrency: int = 8, model_dir: Path | None = None
) -> Report:
    """Start the stack, warm it up, read RSS, send ``requests`` fuzzed requests per server, read RSS, stop it."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="kairos-fuzz-") as tmp:
        stack = start_stack(Path(tmp), model_dir)
        try:
            t0 = time.perf_counter()
            reports = {name: ServerReport() for name in stack.all()}
            warm = {s: malformed(rng, warmup) for s in SERVERS}
            scratch = {s: ServerReport() for s in SERVERS}
            asyncio.run(_fuzz(stack, warm, scratch, concurrency))
            for name, proc in stack.all().items():
                reports[name].rss_before_kb = vm_rss_kb(proc.pid)
            batches = {s: malformed(rng, requests) for s in SERVERS}
            asyncio.run(_fuzz(stack, batches, reports, concurrency))
            for name, proc in stack.all().items():
                reports[name].rss_after_kb = vm_rss_kb(proc.pid)
                reports[name].exited = not proc.alive()
            return Report(reports, time.perf_counter() - t0)
        finally:
            stack.stop()


def format_report(report: Report) -> str:
    """The printed table."""
    lines = [
        f"{'server':<22} {'requests':>8} {'5xx':>4} {'no answer':>9} {'exited':>6} "
        f"{'RSS before MB':>13} {'RSS after MB':>12} {'growth MB':>9}  statuses",
    ]
    for name, r in report.servers.items():
        before, after = r.rss_before_kb, r.rss_after_kb
        growth = f"{(after - before) / 1024:9.1f}" if before is not None and after is not None else f"{'?':>9}"
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(r.statuses.items())) or "-"
        lines.append(
            f"{name:<22} {r.requests:>8} {r.server_errors:>4} {len(r.failures):>9} {str(r.exited):>6} "
            f"{(before or 0) / 1024:13.1f} {(after or 0) / 1024:12.1f} {growth}  {shown}"
        )
    total = sum(r.requests for r in report.servers.values())
    lines.append(f"{total} requests in {report.seconds:.1f} s (a negative status: a 4xx without a JSON error)")
    return "\n".join(lines)


def main() -> None:
    """Run and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600, help="fuzzed requests per server after the warm-up")
    ap.add_argument("--warmup", type=int, default=200, help="fuzzed requests per server before the first RSS reading")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight per server")
    ap.add_argument("--model-dir", type=Path, default=None, help="where the ONNX model is (built if missing)")
    args = ap.parse_args()
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    report = run(args.requests, args.warmup, args.seed, args.concurrency, args.model_dir)
    print(format_report(report))
    for name, r in report.servers.items():
        for failure in r.failures[:3]:
            print(f"{name}: no answer: {failure}")


if __name__ == "__main__":
    main()
