"""A run's output folder, ``reports/<run-id>/``: queries.parquet, summary.parquet, run.json, report.html.

The one writer of run folders, simulated (``kairos simulate --out``) and live (the Locust harness). Queries are
streamed phase by phase: ``queries.parquet`` is a directory of parquet parts of ``QUERY_SCHEMA``, one per phase, each
renamed into place complete (``harness/core/record_sink.py``; ``pd.read_parquet`` reads the directory as one table).
The summary and run.json are rewritten after every phase, each to a temporary file renamed over the old one, so a run
killed at any moment (kill -9 included) leaves readable files, with run.json saying ``partial: true``;
``finish(partial=...)`` closes them and builds the HTML report.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.record_sink import RecordSink
from harness.core.records import QUERY_SCHEMA, conform
from harness.measure.analyzer import stamp_allowable
from harness.report.page import build_report

PACKAGES = (
    "kairos-harness",
    "locust",
    "aiohttp",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "onnxruntime",
    "onnx",
    "plotly",
    "gevent",
)


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


def replace_file(path: Path, write) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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

    def __init__(self, path: str | Path, *, meta: dict | None = None, exist_ok: bool = False):
        self.path = Path(path)
        self.run_id = self.path.name
        self.path.mkdir(parents=True, exist_ok=exist_ok)
        self.queries = RecordSink(self.path / "queries.parquet", QUERY_SCHEMA)
        self.summary_rows: list[dict] = []
        self.meta = {
            "run_id": self.run_id,
            "started_at": datetime.now(UTC).isoformat(),
            "partial": True,
            "versions": versions(),
            "machine": machine(),
            **(meta or {}),
        }
        self._write_meta()

    def add_phase(self, queries: pd.DataFrame, summary_row: dict) -> None:
        """Append one phase's query rows (written at once) and its summary row."""
        self.add_queries(queries)
        self.add_summary(summary_row)

    def add_queries(self, queries: pd.DataFrame) -> None:
        """Append query rows as one part (columns coerced to the query schema)."""
        if len(queries):
            self.queries.extend(conform(queries, QUERY_SCHEMA).to_dict("records"))

    def add_summary(self, *summary_rows: dict) -> None:
        """Append summary rows and rewrite summary.parquet once."""
        self.summary_rows.extend(summary_rows)
        self.write_summary()

    def set_allowable(self, dispatcher: str, allowable_qps: float, bracket: tuple[float, float], **extra) -> None:
        """Stamp a dispatcher's search result on its summary rows (``extra``: e.g. the simulator's answer)."""
        stamp_allowable(self.summary_rows, dispatcher, allowable_qps, bracket, **extra)
        self.write_summary()

    def write_summary(self) -> None:
        """Rewrite summary.parquet from the rows so far (atomically)."""
        if self.summary_rows:
            frame = pd.DataFrame(self.summary_rows)
            replace_file(self.path / "summary.parquet", lambda tmp: frame.to_parquet(tmp, index=False))

    def update_meta(self, **fields) -> None:
        """Merge fields into run.json."""
        self.meta.update(fields)
        self._write_meta()

    def _write_meta(self) -> None:
        text = json.dumps(_jsonable(self.meta), indent=2, sort_keys=True)
        replace_file(self.path / "run.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def finish(self, *, partial: bool, build_html: bool = True) -> Path | None:
        """Close the files, mark the run complete or partial, and build report.html."""
        self.queries.close()
        self.write_summary()
        self.update_meta(partial=partial, finished_at=datetime.now(UTC).isoformat())
        if not build_html or not self.summary_rows:
            return None
        return build_report(self.path)
