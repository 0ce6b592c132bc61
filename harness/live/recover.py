"""Rebuild what a killed live run left unfinished, from the files it streamed while it ran.

A live run writes each phase's plan when the phase starts (``phases/phase-N.json``), the load generator's records
about once a second (``client.parquet``) and the dispatcher's records the same way (``dispatcher.parquet``, written by
its own process). A phase that ends normally gets its merged rows in ``queries.parquet`` and a summary row; a kill -9
of the Locust process leaves the phase in progress with neither. ``recover`` finds such phases (a plan, no summary
row), merges their client and dispatcher rows exactly as a live phase does (``merge_phase``), appends them to
``queries.parquet`` and adds a summary row marked invalid, so ``kairos report`` shows what the killed run measured.

It only touches a run whose writer is gone: the writer holds ``writer.lock`` while it runs (``RunDir``), and recovery
takes that lock first, so a run still in progress is left alone. Recovering twice does nothing the second time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from harness.core.records import CLIENT_SCHEMA, conform
from harness.live.options import LiveOptions
from harness.live.phase import CLIENT_COLUMNS, ClientRecord, PhasePlan, account, merge_phase, phase_summary_row
from harness.live.run_dir import (
    PHASES_DIR,
    WriterLock,
    append_queries,
    append_summary,
    read_meta,
    write_meta,
)
from harness.measure.analyzer import ValidityRules, summarize

RECOVERED_REASON = "interrupted: recovered after the run was killed"
_RULE_FIELDS = ("min_queries", "phase_seconds", "criterion")  # what a live phase's validity rules come from


@dataclass(frozen=True)
class RecoveredPhase:
    """One phase rebuilt from a killed run's files."""

    phase: int
    dispatcher: str
    queries: int  # rows in queries.parquet
    answered_ok: int


def recover(run_path: str | Path) -> list[RecoveredPhase]:
    """Rebuild the phases a killed live run left without a summary row (none when its writer still runs, or when
    the run finished)."""
    run_path = Path(run_path)
    lock = WriterLock(run_path)
    if not (run_path / "run.json").exists() or not (run_path / PHASES_DIR).is_dir() or not lock.acquire():
        return []
    try:
        meta = read_meta(run_path)
        if meta.get("partial") is False:
            return []
        plans = [p for p in _plans(run_path) if p.index not in _summarized_phases(run_path)]
        if not plans:
            return []
        recovered = _rebuild(run_path, meta, plans)
        if recovered:
            meta.update(
                recovered_at=datetime.now(UTC).isoformat(),
                recovered_phases=sorted({*meta.get("recovered_phases", []), *(r.phase for r in recovered)}),
            )
            write_meta(run_path, meta)
        return recovered
    finally:
        lock.release()


def rules_of(meta: dict) -> ValidityRules:
    """A live run's validity rules, from the configuration its run.json records."""
    config = meta.get("config") or {}
    return replace(LiveOptions(), **{k: config[k] for k in _RULE_FIELDS if config.get(k) is not None}).rules


def _rebuild(run_path: Path, meta: dict, plans: list[PhasePlan]) -> list[RecoveredPhase]:
    client = _read(run_path / "client.parquet")
    dispatcher = _read(run_path / "dispatcher.parquet")
    queries = _read(run_path / "queries.parquet")
    qos_ms, rules = float(meta.get("qos_ms", math.nan)), rules_of(meta)
    cost = meta.get("cost_per_h")
    recovered, rows = [], []
    for plan in plans:
        planned = set(plan.request_ids)
        records = _client_records(_rows_of(client, plan.index, planned))
        disp = _rows_of(dispatcher, None, planned)
        disp_cols = _columns(disp)
        merged = _rows_of(queries, plan.index, planned)  # killed between a phase's rows and its summary row
        if not len(merged):
            # Each id once on each side (the books below see the raw rows, and say so if an id came twice).
            merged = merge_phase(plan, _unique(records), _columns(disp.drop_duplicates("request_id", keep="last")))
            if not len(merged):
                continue  # nothing was sent: nothing to show
            append_queries(run_path, merged)
        summary = summarize(merged, qos_ms, rules)
        row = phase_summary_row(plan, merged, summary, math.nan, cost)
        row.update(account(plan, records, disp_cols, merged).as_row())
        row.update(valid=False, invalid_reason=RECOVERED_REASON)
        rows.append(row)
        ok = int((merged["status"] == "ok").sum())
        recovered.append(RecoveredPhase(plan.index, plan.dispatcher, len(merged), ok))
    if rows:
        append_summary(run_path, rows)
    return recovered


def _plans(run_path: Path) -> list[PhasePlan]:
    plans = [
        PhasePlan(**json.loads(p.read_text(encoding="utf-8"))) for p in (run_path / PHASES_DIR).glob("phase-*.json")
    ]
    return sorted(plans, key=lambda p: p.index)


def _summarized_phases(run_path: Path) -> set[int]:
    path = run_path / "summary.parquet"
    if not path.exists():
        return set()
    summary = pd.read_parquet(path)
    return set(summary["phase"].dropna().astype(int)) if "phase" in summary else set()


def _read(path: Path) -> pd.DataFrame:
    """A parquet file or directory of parts; empty (with a request_id column) when there is none."""
    return pd.read_parquet(path) if path.exists() else pd.DataFrame({"request_id": pd.Series(dtype=str)})


def _rows_of(frame: pd.DataFrame, phase: int | None, planned: set[str]) -> pd.DataFrame:
    """The rows of ``frame`` for the planned ids (and, where the frame says, of ``phase``)."""
    keep = frame["request_id"].isin(planned)
    if phase is not None and "phase" in frame:
        keep &= frame["phase"] == phase
    return frame[keep].reset_index(drop=True)


def _columns(frame: pd.DataFrame) -> dict:
    """Rows as the column dict ``merge_phase`` and ``account`` take (what the dispatcher's admin answers)."""
    return frame.to_dict("list") if len(frame) else {}


def _client_records(frame: pd.DataFrame) -> list[ClientRecord]:
    if not len(frame):
        return []
    frame = conform(frame, CLIENT_SCHEMA)
    return [ClientRecord(*values) for values in zip(*(frame[c].tolist() for c in CLIENT_COLUMNS))]


def _unique(records: list[ClientRecord]) -> list[ClientRecord]:
    seen: dict[str, ClientRecord] = {}
    for r in records:
        seen.setdefault(r.request_id, r)
    return list(seen.values())
