"""A run's output folder, ``reports/<run-id>/``: queries.parquet, summary.parquet, run.json, report.html.

Queries are streamed phase by phase (row groups), the summary and run.json are rewritten after every phase, so an
interrupted run still leaves readable files; ``finish(partial=...)`` closes them and builds the HTML report.
"""

from __future__ import annotations

import json
import math
import platform
import os
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.record_sink import RecordSink

# The live queries.parquet columns: the shared record schema, then what the load generator and dispatcher add.
QUERY_COLUMNS = ("request_id", "model", "batch_size", "arrival_s", "dispatch_s", "start_s", "finish_s",
                 "instance_id", "instance_type", "policy", "status", "dispatcher", "phase", "offered_qps",
                 "sent_s", "send_lag_ms", "latency_ms", "http_status", "queue_ms", "service_ms", "backend_finish_s",
                 "attempts", "worker")
PACKAGES = ("kairos-harness", "locust", "aiohttp", "numpy", "scipy", "pandas", "pyarrow", "onnxruntime", "onnx",
            "plotly", "gevent")


def new_run_id(prefix: str = "run") -> str:
    """A sortable, unique-enough run id: ``<prefix>-YYYYmmdd-HHMMSS-<pid>``."""
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def versions() -> dict[str, str]:
    """Python and package versions (what a report must state to be rerun)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    """The machine the run was measured on."""
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


class RunDir:
    """Writes one run's files as the run goes."""

    def __init__(self, root: str | Path, run_id: str | None = None, *, meta: dict | None = None):
        self.run_id = run_id or new_run_id()
        self.path = Path(root) / self.run_id
        self.path.mkdir(parents=True, exist_ok=False)
        self.queries = RecordSink(self.path / "queries.parquet", QUERY_COLUMNS)
        self.summary_rows: list[dict] = []
        self.meta = {"run_id": self.run_id, "started_at": datetime.now(timezone.utc).isoformat(),
                     "partial": True, "versions": versions(), "machine": machine(), **(meta or {})}
        self._write_meta()

    def add_phase(self, queries: pd.DataFrame, summary_row: dict) -> None:
        """Append one phase's query rows (written at once) and its summary row."""
        self.add_queries(queries)
        self.summary_rows.append(summary_row)
        self.write_summary()

    def add_queries(self, queries: pd.DataFrame) -> None:
        """Append query rows as one row group (columns coerced to the fixed schema)."""
        if len(queries):
            self.queries.extend(normalize_queries(queries).to_dict("records"))

    def set_allowable(self, dispatcher: str, allowable_qps: float, bracket: tuple[float, float],
                      sim_allowable_qps: float | None = None) -> None:
        """Stamp a dispatcher's sweep result on its summary rows."""
        for row in self.summary_rows:
            if row["dispatcher"] == dispatcher:
                row["allowable_qps"] = allowable_qps
                row["bracket_low_qps"], row["bracket_high_qps"] = bracket
                if sim_allowable_qps is not None:
                    row["sim_allowable_qps"] = sim_allowable_qps
        self.write_summary()

    def write_summary(self) -> None:
        """Rewrite summary.parquet from the rows so far."""
        if self.summary_rows:
            pd.DataFrame(self.summary_rows).to_parquet(self.path / "summary.parquet", index=False)

    def update_meta(self, **fields) -> None:
        """Merge fields into run.json."""
        self.meta.update(fields)
        self._write_meta()

    def _write_meta(self) -> None:
        (self.path / "run.json").write_text(json.dumps(_jsonable(self.meta), indent=2, sort_keys=True))

    def finish(self, *, partial: bool, build_html: bool = True) -> Path | None:
        """Close the files, mark the run complete or partial, and build report.html."""
        self.queries.close()
        self.write_summary()
        self.update_meta(partial=partial, finished_at=datetime.now(timezone.utc).isoformat())
        if not build_html or not self.summary_rows:
            return None
        try:
            from harness.report.page import build_report
        except ImportError:  # the report module is optional for a bare install
            return None
        return build_report(self.path)


def normalize_queries(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce to QUERY_COLUMNS with stable dtypes so every row group has the same schema."""
    out = pd.DataFrame(index=frame.index)
    text = {"request_id", "model", "instance_id", "instance_type", "policy", "status", "dispatcher", "worker"}
    ints = {"batch_size", "phase", "http_status", "attempts"}
    for col in QUERY_COLUMNS:
        values = frame[col] if col in frame.columns else None
        if col in text:
            out[col] = (values.fillna("").astype(str) if values is not None else "")
        elif col in ints:
            out[col] = (pd.to_numeric(values, errors="coerce").fillna(0).astype(np.int64) if values is not None else 0)
        else:
            out[col] = (pd.to_numeric(values, errors="coerce").astype(float) if values is not None else np.nan)
    return out.reset_index(drop=True)
