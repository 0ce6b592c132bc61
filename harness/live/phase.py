"""One live phase: the plan every load generator replays, the record each request leaves, and the merged records.

A phase is the trace rate-scaled to an offered load and cut to a phase length. Its ``PhasePlan`` holds every send time
up front (offsets from a common start epoch), so any number of load-generating processes can each replay an
interleaved shard of it open loop. Each request leaves one ``ClientRecord``; a ``ClientLog`` streams them to the run
folder while the phase runs (so a killed run's phase can be rebuilt); ``merge_phase`` joins the client's records with
the dispatcher's into rows of the query schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Protocol

import numpy as np
import pandas as pd

from harness.core.record_sink import RecordSink
from harness.core.records import DROPPED, FAILED, OK, SHED, TIMED_OUT, elapsed_ms, latency_ms
from harness.measure.analyzer import PointSummary, percentile_ms, summary_row
from traces.schema import Trace


@dataclass(frozen=True)
class PhasePlan:
    """One phase as load generators need it: ids, send offsets (s from start_epoch), batch sizes, target URL."""

    index: int
    dispatcher: str
    offered_qps: float
    model: str
    url: str
    start_epoch: float
    request_ids: list[str]
    offsets_s: list[float]
    batch_sizes: list[int]

    @classmethod
    def from_trace(
        cls,
        trace: Trace,
        *,
        url: str,
        start_epoch: float,
        index: int = 0,
        dispatcher: str = "",
        offered_qps: float | None = None,
        id_prefix: str | None = None,
    ) -> PhasePlan:
        """The plan that replays ``trace`` (one model) against ``url`` from ``start_epoch``; ids ``p<index>-<i>``."""
        prefix = f"p{index}-" if id_prefix is None else id_prefix
        return cls(
            index,
            dispatcher,
            float(offered_qps if offered_qps is not None else trace.mean_rate_qps),
            trace.models[0],
            url,
            start_epoch,
            request_ids=[f"{prefix}{i}" for i in range(len(trace))],
            offsets_s=(trace.arrival_s - trace.arrival_s[0]).tolist(),
            batch_sizes=trace.batch_size.tolist(),
        )

    def shard(self, k: int, n: int) -> PhasePlan:
        """The k-th of n interleaved shards (every query in exactly one shard)."""
        return replace(
            self, request_ids=self.request_ids[k::n], offsets_s=self.offsets_s[k::n], batch_sizes=self.batch_sizes[k::n]
        )

    def to_message(self) -> dict:
        """The plan as a message payload (Locust's messages carry plain data)."""
        return asdict(self)


@dataclass
class ClientRecord:
    """One request as the load generator saw it (Unix seconds): when it was meant to go, went, and came back."""

    request_id: str
    intended_s: float
    sent_s: float
    finish_s: float
    http_status: int  # 0: no HTTP answer (connection error, timeout)
    worker: str = ""
    error: str = ""


CLIENT_COLUMNS = tuple(f.name for f in fields(ClientRecord))


def to_columns(records: list[ClientRecord]) -> dict[str, list]:
    """Client records as columns (a compact message payload)."""
    return {c: [getattr(r, c) for r in records] for c in CLIENT_COLUMNS}


def from_columns(columns: dict[str, list]) -> list[ClientRecord]:
    """The inverse of ``to_columns``."""
    return [ClientRecord(*values) for values in zip(*(columns[c] for c in CLIENT_COLUMNS))]


def client_frame(records: list[ClientRecord]) -> pd.DataFrame:
    """Client records as a DataFrame with ``latency_ms`` (from the intended send) and ``send_lag_ms``."""
    frame = pd.DataFrame([asdict(r) for r in records], columns=list(CLIENT_COLUMNS))
    frame["latency_ms"] = elapsed_ms(frame["intended_s"], frame["finish_s"])
    frame["send_lag_ms"] = elapsed_ms(frame["intended_s"], frame["sent_s"])
    return frame


class ClientLog:
    """One phase's client records on their way to a sink (a run folder's client.parquet), each planned request id
    once, labelled with the phase; ``add`` buffers, ``flush`` writes (the load generator calls it about once a
    second, so a kill -9 loses about the last second)."""

    def __init__(self, sink: RecordSink, plan: PhasePlan):
        self.sink = sink
        self._labels = {"phase": plan.index, "dispatcher": plan.dispatcher, "offered_qps": plan.offered_qps}
        self._planned = frozenset(plan.request_ids)
        self._logged: set[str] = set()

    def add(self, records: Iterable[ClientRecord]) -> None:
        """Buffer the records not logged yet (the same record may come twice: in a batch, then in the shard's end)."""
        labels, planned, logged = self._labels, self._planned, self._logged
        for r in records:
            rid = r.request_id
            if rid in planned and rid not in logged:  # another phase's leftovers are not this phase's rows
                logged.add(rid)
                self.sink.append({**vars(r), **labels})

    def flush(self) -> None:
        """Write what is buffered as one part (nothing when nothing is)."""
        self.sink.flush()

    def close(self, records: Iterable[ClientRecord]) -> None:
        """The phase is over: add every record not logged yet (``records``: all of them) and write."""
        self.add(records)
        self.flush()


@dataclass
class PhaseOutput:
    """What load generators send back: client records and their own CPU use."""

    records: list[ClientRecord] = field(default_factory=list)
    cpu_percent: float = math.nan


class LoadGenerator(Protocol):
    """Replays phases open-loop; the Locust glue implements it with gevent greenlets and custom messages."""

    def run_phase(self, plan: PhasePlan, client_log: ClientLog | None = None) -> PhaseOutput:
        """Send the phase's queries at their times; block until all have answered. Records of finished queries go to
        ``client_log`` as they come (flushed about once a second), so a kill -9 loses about the last second."""

    def partial_records(self) -> list[ClientRecord]:
        """Client records of the phase in progress (for an interrupted run)."""


def merge_phase(plan: PhasePlan, client: list[ClientRecord], dispatcher_cols: dict) -> pd.DataFrame:
    """One row per query of the phase that was sent or reached the dispatcher: client + dispatcher views joined.

    Latency runs from the *intended* send time (a late load generator cannot hide latency) to the client's finish.
    """
    sent = (
        client_frame(client).drop(columns=["latency_ms", "send_lag_ms"]).rename(columns={"finish_s": "client_finish_s"})
    )
    disp = pd.DataFrame(dispatcher_cols) if dispatcher_cols else pd.DataFrame(columns=["request_id"])
    disp = disp.rename(
        columns={"finish_s": "backend_finish_s", "status": "dispatcher_status", "http_status": "dispatcher_http_status"}
    )
    base = pd.DataFrame(
        {
            "request_id": plan.request_ids,
            "batch_size": plan.batch_sizes,
            "planned_s": [plan.start_epoch + o for o in plan.offsets_s],
        }
    )
    merged = base.merge(sent.drop(columns=["error"]), on="request_id", how="left").merge(
        disp.drop(columns=[c for c in ("model", "batch_size", "arrival_s", "policy", "error") if c in disp.columns]),
        on="request_id",
        how="left",
    )
    merged = merged[merged["sent_s"].notna() | merged.get("dispatcher_status", pd.Series(dtype=object)).notna()]
    ok = merged["http_status"].fillna(0).astype(int) == 200
    dstat = merged.get("dispatcher_status", pd.Series("", index=merged.index)).fillna("")
    status = np.where(ok, OK, np.where(dstat.isin([SHED, DROPPED, TIMED_OUT]), dstat, FAILED))
    intended = merged["intended_s"].fillna(merged["planned_s"])
    out = pd.DataFrame(
        {
            "request_id": merged["request_id"],
            "model": plan.model,
            "batch_size": merged["batch_size"],
            "arrival_s": intended,
            "dispatch_s": merged.get("dispatch_s"),
            "start_s": merged.get("start_s"),
            "finish_s": merged["client_finish_s"].where(ok),
            "instance_id": merged.get("instance_id"),
            "instance_type": merged.get("instance_type"),
            "policy": plan.dispatcher,
            "status": status,
            "dispatcher": plan.dispatcher,
            "phase": plan.index,
            "offered_qps": plan.offered_qps,
            "sent_s": merged["sent_s"],
            "send_lag_ms": elapsed_ms(intended, merged["sent_s"]),
            "http_status": merged["http_status"].fillna(merged.get("dispatcher_http_status", 0)).fillna(0),
            "queue_ms": merged.get("queue_ms"),
            "service_ms": merged.get("service_ms"),
            "backend_finish_s": merged.get("backend_finish_s"),
            "attempts": merged.get("attempts"),
            "worker": merged["worker"],
        }
    )
    out["latency_ms"] = latency_ms(out)
    return out.sort_values("arrival_s", kind="stable").reset_index(drop=True)


def phase_summary_row(
    plan: PhasePlan, merged: pd.DataFrame, summary: PointSummary, cpu_percent: float, cost_per_h: float | None
) -> dict:
    """One summary.parquet row for a live phase (its merged rows and their summary; the load generator's CPU)."""
    sent = merged["sent_s"].dropna().sort_values().to_numpy()
    return summary_row(
        plan.dispatcher,
        plan.index,
        summary,
        plan.offered_qps,
        cost_per_h,
        send_lag_p99_ms=percentile_ms(merged["send_lag_ms"].dropna().to_numpy(), 99),
        sent_qps=(len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 and sent[-1] > sent[0] else math.nan,
        loadgen_cpu_percent=cpu_percent,
    )


class AccountingError(RuntimeError):
    """A phase's queries do not add up: some were lost or counted twice."""


@dataclass(frozen=True)
class PhaseAccount:
    """Where every planned query of a phase went, checked from the client's and the dispatcher's side."""

    planned: int
    not_sent: int  # never sent (an interrupted phase)
    sent: int
    answered_ok: int
    failed: int
    shed: int
    dropped: int
    timed_out: int
    dispatcher_records: int
    problems: tuple[str, ...]

    def as_row(self) -> dict:
        """The summary-row columns (``accounting_ok`` False when anything does not add up)."""
        row = {f"{k}_queries": v for k, v in asdict(self).items() if k != "problems"}
        return {**row, "accounting_ok": not self.problems, "accounting_problems": "; ".join(self.problems)}


def account(plan: PhasePlan, client: list[ClientRecord], dispatcher_cols: dict, merged: pd.DataFrame) -> PhaseAccount:
    """Check that planned = not sent + sent, sent = ok + failed + shed + dropped + timed out, each query id once on
    each side, and every query the client saw answered OK recorded by the dispatcher."""
    planned = set(plan.request_ids)
    client_ids = [r.request_id for r in client]
    disp_ids = list((dispatcher_cols or {}).get("request_id", []))
    problems = []
    for side, ids in (("client", client_ids), ("dispatcher", disp_ids)):
        if len(ids) != len(set(ids)):
            problems.append(f"{len(ids) - len(set(ids))} query id(s) recorded twice by the {side}")
        stray = set(ids) - planned
        if stray:
            problems.append(f"{len(stray)} {side} record(s) of queries this phase never planned")
    ok_ids = {r.request_id for r in client if r.http_status == 200}
    unrecorded = ok_ids - set(disp_ids)
    if unrecorded:
        problems.append(f"{len(unrecorded)} query(ies) answered 200 but not recorded by the dispatcher")
    status = merged["status"].value_counts().to_dict() if len(merged) else {}
    counts = {s: int(status.get(s, 0)) for s in (OK, FAILED, SHED, DROPPED, TIMED_OUT)}
    sent = len(set(client_ids) & planned)
    not_sent = len(planned) - len(merged)
    if sum(counts.values()) != len(merged) or not_sent < 0 or len(merged) < sent:
        problems.append(f"{len(merged)} rows for {len(planned)} planned and {sent} sent queries")
    return PhaseAccount(
        len(planned),
        not_sent,
        sent,
        counts[OK],
        counts[FAILED],
        counts[SHED],
        counts[DROPPED],
        counts[TIMED_OUT],
        len(disp_ids),
        tuple(problems),
    )
