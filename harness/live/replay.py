"""An open-loop asyncio replayer (in the manner of vLLM's ``bench serve``), used by benchmarks and checks.

It replays a ``PhasePlan``, the same plan the Locust load generators replay: every send time is computed up front;
the sender sleeps to each absolute target on the monotonic clock and fires the request whether or not earlier ones
have returned. Latency is measured from the *intended* send time, so a late sender cannot hide latency; each request
leaves one ``ClientRecord``. Payloads are encoded once per batch size. It needs nothing but aiohttp.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np

from harness.core.gc_freeze import frozen_gc
from harness.live.phase import ClientRecord, PhaseOutput, PhasePlan
from servers import models, v2
from traces.schema import Trace


def payloads_for(model: str, seed: int = 0) -> v2.PayloadCache:
    """Binary V2 payloads for ``model``, built once per batch size from a seeded generator."""
    spec = models.get_spec(model)
    return v2.PayloadCache(lambda b: models.make_inputs(spec, b, np.random.default_rng(seed + b)))


async def replay_plan(
    plan: PhasePlan, *, payloads: v2.PayloadCache | None = None, timeout_s: float = 120.0
) -> list[ClientRecord]:
    """Send every query of ``plan`` at its time (open loop); returns one record per query, in plan order."""
    payloads = payloads or payloads_for(plan.model)
    for b in set(plan.batch_sizes):
        payloads.get(int(b))  # encode before the clock starts
    url = f"{plan.url.rstrip('/')}/v2/models/{plan.model}/infer"
    records: list[ClientRecord | None] = [None] * len(plan.request_ids)
    connector = aiohttp.TCPConnector(limit=0)
    # No cookie jar: inference servers set none, and it is per-request work in the sender's loop.
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        epoch0 = plan.start_epoch
        mono0 = time.perf_counter() + (epoch0 - time.time())

        async def send(i: int, intended: float) -> None:
            enc = payloads.get(plan.batch_sizes[i])
            rid = plan.request_ids[i]
            sent = time.perf_counter()
            status, err = 0, ""
            try:
                async with session.post(url, data=enc.body, headers={**enc.headers, "X-Request-ID": rid}) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                err = f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            records[i] = ClientRecord(
                rid, epoch0 + (intended - mono0), epoch0 + (sent - mono0), epoch0 + (done - mono0), status, error=err
            )

        tasks = []
        with frozen_gc():
            for i, off in enumerate(plan.offsets_s):
                target = mono0 + off
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(i, target)))
            await asyncio.gather(*tasks)
    return records


async def replay(
    trace: Trace,
    base_url: str,
    *,
    payloads: v2.PayloadCache | None = None,
    lead_s: float = 0.5,
    timeout_s: float = 120.0,
    id_prefix: str = "q",
) -> list[ClientRecord]:
    """Replay ``trace`` against ``base_url`` starting ``lead_s`` from now; one record per query."""
    plan = PhasePlan.from_trace(trace, url=base_url, start_epoch=time.time() + lead_s, id_prefix=id_prefix)
    return await replay_plan(plan, payloads=payloads, timeout_s=timeout_s)


class AsyncioLoadGenerator:
    """A ``LoadGenerator`` without Locust: each phase replayed by ``replay_plan`` in this process (checks, scripts)."""

    def __init__(self, timeout_s: float = 120.0):
        self.timeout_s = timeout_s

    def run_phase(self, plan: PhasePlan, client_log=None) -> PhaseOutput:
        """Replay the phase; block until every query has answered (the run writes ``client_log`` from the result)."""
        cpu0, wall0 = time.process_time(), time.perf_counter()
        records = asyncio.run(replay_plan(plan, timeout_s=self.timeout_s))
        busy = time.perf_counter() - wall0
        return PhaseOutput(records, 100.0 * (time.process_time() - cpu0) / busy if busy > 0 else float("nan"))

    def partial_records(self) -> list[ClientRecord]:
        """Nothing: a phase's records exist only once it has run."""
        return []
