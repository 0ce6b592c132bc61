"""Per-query records: one schema for the simulator, the live dispatcher and the load generator.

A schema maps each column to its dtype. Every driver writes the base record (``RECORD_SCHEMA``); the dispatcher adds
its own measurements of a forwarded query (``DISPATCHER_SCHEMA``); a run folder's ``queries.parquet`` holds the base
record plus which dispatcher and phase it belongs to and the client's view (``QUERY_SCHEMA``); the load generator's
own records, streamed while a phase runs, are ``CLIENT_SCHEMA``. ``conform`` gives any frame a schema's columns and
dtypes, so every file and every row group of one kind has the same layout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STR, INT, FLOAT = "str", "int64", "float64"

RECORD_SCHEMA: dict[str, str] = {
    "request_id": STR,
    "model": STR,
    "batch_size": INT,
    "arrival_s": FLOAT,
    "dispatch_s": FLOAT,
    "start_s": FLOAT,
    "finish_s": FLOAT,  # times in seconds
    "instance_id": STR,
    "instance_type": STR,
    "policy": STR,
    "status": STR,
}
# What the dispatcher measures of a forwarded query, besides the base record.
DISPATCHER_SCHEMA: dict[str, str] = {
    **RECORD_SCHEMA,
    "queue_ms": FLOAT,
    "service_ms": FLOAT,
    "http_status": INT,
    "attempts": INT,
    "error": STR,
}
# A run folder's queries.parquet: the base record, the run's labels, then the client's and the dispatcher's views.
QUERY_SCHEMA: dict[str, str] = {
    **RECORD_SCHEMA,
    "dispatcher": STR,
    "phase": INT,
    "offered_qps": FLOAT,
    "sent_s": FLOAT,
    "send_lag_ms": FLOAT,
    "latency_ms": FLOAT,
    "http_status": INT,
    "queue_ms": FLOAT,
    "service_ms": FLOAT,
    "backend_finish_s": FLOAT,
    "attempts": INT,
    "worker": STR,
}
# The load generator's view of one request (``ClientRecord`` in harness/live/phase.py, same fields first), labelled
# with its phase: a run folder's client.parquet, streamed as a phase runs so a killed run's last phase can be rebuilt.
CLIENT_SCHEMA: dict[str, str] = {
    "request_id": STR,
    "intended_s": FLOAT,
    "sent_s": FLOAT,
    "finish_s": FLOAT,
    "http_status": INT,
    "worker": STR,
    "error": STR,
    "phase": INT,
    "dispatcher": STR,
    "offered_qps": FLOAT,
}
RECORD_COLUMNS = tuple(RECORD_SCHEMA)
DISPATCHER_COLUMNS = tuple(DISPATCHER_SCHEMA)
QUERY_COLUMNS = tuple(QUERY_SCHEMA)

# Status values: served; dropped by the policy (counts as a QoS violation); shed by a full queue; failed (an
# instance's error, or the request's own); timed out waiting in the queue past its deadline.
OK, DROPPED, SHED, FAILED, TIMED_OUT = "ok", "dropped", "shed", "failed", "timeout"

_EMPTY = {STR: "", INT: 0, FLOAT: np.nan}


def empty_row(schema: dict[str, str]) -> dict:
    """A row of ``schema`` with every field unset ("" for text, 0 for counts, NaN for times)."""
    return {col: _EMPTY[dtype] for col, dtype in schema.items()}


def conform(frame: pd.DataFrame, schema: dict[str, str]) -> pd.DataFrame:
    """``frame`` with exactly ``schema``'s columns, in order and with its dtypes (missing ones unset)."""
    out = pd.DataFrame(index=frame.index)
    for col, dtype in schema.items():
        values = frame[col] if col in frame.columns else None
        if dtype == STR:
            out[col] = values.fillna("").astype(str) if values is not None else ""
        elif dtype == INT:
            out[col] = pd.to_numeric(values, errors="coerce").fillna(0).astype(np.int64) if values is not None else 0
        else:
            out[col] = pd.to_numeric(values, errors="coerce").astype(float) if values is not None else np.nan
    return out.reset_index(drop=True)


def elapsed_ms(start_s, end_s):
    """Milliseconds from ``start_s`` to ``end_s`` (scalars or arrays of seconds)."""
    return (end_s - start_s) * 1000.0


def latency_ms(records: pd.DataFrame) -> np.ndarray:
    """End-to-end latency per query in ms (finish - arrival); +inf for queries that were not served."""
    lat = elapsed_ms(records["arrival_s"].to_numpy(float), records["finish_s"].to_numpy(float))
    served = (records["status"].to_numpy() == OK) & np.isfinite(lat)
    return np.where(served, lat, np.inf)
