"""An open-loop asyncio replayer (in the manner of vLLM's ``bench serve``), used by benchmarks and checks.

Every send time is computed up front; the sender sleeps to each absolute target on the monotonic clock and fires the
request whether or not earlier ones have returned. Latency is measured from the *intended* send time, so a late
sender cannot hide latency; the lag between intended and actual send is recorded too. Payloads are encoded once per
batch size. The Locust harness does the same inside Locust; this one needs nothing but aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

import aiohttp
import numpy as np
import pandas as pd

from harness.core.gc_freeze import frozen_gc
from servers import models, v2
from traces.schema import Trace


@dataclass
class ClientRecord:
    """One request as the client saw it (times in Unix seconds)."""

    request_id: str
    batch_size: int
    intended_s: float
    sent_s: float
    finish_s: float
    http_status: int
    instance_id: str
    error: str


def payloads_for(model: str, seed: int = 0) -> v2.PayloadCache:
    """Binary V2 payloads for ``model``, built once per batch size from a seeded generator."""
    spec = models.get_spec(model)
    return v2.PayloadCache(lambda b: models.make_inputs(spec, b, np.random.default_rng(seed + b)))


async def replay(trace: Trace, base_url: str, *, payloads: v2.PayloadCache | None = None, lead_s: float = 0.5,
                 timeout_s: float = 120.0, id_prefix: str = "q") -> list[ClientRecord]:
    """Send every query of ``trace`` to ``base_url`` at its trace time (open loop); returns one record per query."""
    model = trace.models[0]
    payloads = payloads or payloads_for(model)
    for b in np.unique(trace.batch_size):
        payloads.get(int(b))  # encode before the clock starts
    url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"
    offsets = (trace.arrival_s - trace.arrival_s[0]).tolist()
    batches = trace.batch_size.tolist()
    records: list[ClientRecord | None] = [None] * len(trace)
    connector = aiohttp.TCPConnector(limit=0)
    # No cookie jar: inference servers set none, and it is per-request work in the sender's loop.
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        mono0 = time.perf_counter() + lead_s
        epoch0 = time.time() + lead_s

        async def send(i: int, intended: float) -> None:
            enc = payloads.get(batches[i])
            rid = f"{id_prefix}{i}"
            sent = time.perf_counter()
            status, inst, err = 0, "", ""
            try:
                async with session.post(url, data=enc.body, headers={**enc.headers, "X-Request-ID": rid}) as resp:
                    await resp.read()
                    status, inst = resp.status, resp.headers.get("X-Kairos-Instance", "")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                err = f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            records[i] = ClientRecord(rid, batches[i], epoch0 + (intended - mono0), epoch0 + (sent - mono0),
                                      epoch0 + (done - mono0), status, inst, err)

        tasks = []
        with frozen_gc():
            for i, off in enumerate(offsets):
                target = mono0 + off
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(i, target)))
            await asyncio.gather(*tasks)
    return records


def client_frame(records: list[ClientRecord]) -> pd.DataFrame:
    """Client records as a DataFrame with ``latency_ms`` (from intended send) and ``send_lag_ms``."""
    frame = pd.DataFrame([asdict(r) for r in records])
    frame["latency_ms"] = (frame["finish_s"] - frame["intended_s"]) * 1000.0
    frame["send_lag_ms"] = (frame["sent_s"] - frame["intended_s"]) * 1000.0
    return frame
