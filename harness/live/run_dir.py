"""A run's output folder, ``reports/<run-id>/``: queries.parquet, summary.parquet, run.json, report.html.

The one writer of run folders, simulated (``kairos simulate --out``) and live (the Locust harness). Queries are
streamed phase by phase: ``queries.parquet`` is a directory of parquet parts of ``QUERY_SCHEMA``, one per phase, each
renamed into place complete (``harness/core/record_sink.py``; ``pd.read_parquet`` reads the directory as one table).
The summary and run.json are rewritten after every phase, each to a temporary file renamed over the old one, so a run
killed at any moment (kill -9 included) leaves readable files, with run.json saying ``partial: true``;
``finish(partial=...)`` closes them and builds the HTML report.

A live phase leaves more while it runs: its plan (``phases/phase-N.json``, written when it starts) and the load
generator's records (``client.parquet``, ``CLIENT_SCHEMA`` parts, about one a second); with the dispatcher's own
``dispatcher.parquet`` they are what ``harness/live/recover.py`` rebuilds a killed run's last phase from. The writing
process holds an exclusive lock on ``writer.lock`` (the kernel drops it when the process dies, kill -9 included), so a
reader can tell a killed run from one still running.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.core.errors import InputError
from harness.core.jsonable import dumps
from harness.core.record_sink import PART_GLOB, RecordSink, part_name
from harness.core.records import CLIENT_SCHEMA, QUERY_SCHEMA, conform
from harness.live.phase import ClientLog, PhasePlan
from harness.measure.analyzer import stamp_allowable
from harness.report.page import build_report

LOCK_NAME = "writer.lock"
PHASES_DIR = "phases"
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


def phase_file(run_path: Path, index: int) -> Path:
    """Where phase ``index``'s plan is kept (written when the phase starts)."""
    return Path(run_path) / PHASES_DIR / f"phase-{index}.json"


class WriterLock:
    """An exclusive ``flock`` on ``RUN/writer.lock``, held by the process writing the folder. The kernel releases it
    when that process dies (kill -9 included), so whoever gets it knows no one else is writing."""

    def __init__(self, run_path: Path):
        self.path = Path(run_path) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:  # its holder removed the file as we opened it: we hold a stale copy
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one else is mid-claim) and let go."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None


def append_queries(run_path: Path, queries: pd.DataFrame) -> None:
    """Append rows to an existing run folder's queries.parquet as its next part (renamed into place complete), with
    the layout of the parts already there."""
    directory = Path(run_path) / "queries.parquet"
    parts = sorted(directory.glob(PART_GLOB))
    frame = conform(queries, QUERY_SCHEMA)
    schema = pq.read_schema(parts[0]) if parts else None
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    nxt = int(parts[-1].stem.removeprefix("part-")) + 1 if parts else 0
    directory.mkdir(parents=True, exist_ok=True)
    replace_file(directory / part_name(nxt), lambda tmp: pq.write_table(table, tmp))


def append_summary(run_path: Path, rows: list[dict]) -> None:
    """Append rows to an existing run folder's summary.parquet (rewritten atomically)."""
    path = Path(run_path) / "summary.parquet"
    frame = pd.DataFrame(rows)
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    replace_file(path, lambda tmp: frame.to_parquet(tmp, index=False))


def read_meta(run_path: Path) -> dict:
    """run.json as a dict (empty when there is none)."""
    path = Path(run_path) / "run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_meta(run_path: Path, meta: dict) -> None:
    """Rewrite run.json atomically."""
    text = dumps(meta, indent=2, sort_keys=True)
    replace_file(Path(run_path) / "run.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))


class RunDir:
    """Writes one run's files as the run goes."""

    def __init__(self, path: str | Path, *, meta: dict | None = None, exist_ok: bool = False):
        self.path = Path(path)
        self.run_id = self.path.name
        self.path.mkdir(parents=True, exist_ok=exist_ok)
        self.writer_lock = WriterLock(self.path)
        if not self.writer_lock.acquire():
            raise InputError(f"{self.path}: another process is writing this run folder")
        self.queries = RecordSink(self.path / "queries.parquet", QUERY_SCHEMA)
        self.client: RecordSink | None = None  # opened by the first live phase: a simulated run has none
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

    def start_phase(self, plan: PhasePlan) -> ClientLog:
        """Keep the plan of a phase about to start (atomically) and return the log its client records stream to."""
        path = phase_file(self.path, plan.index)
        path.parent.mkdir(exist_ok=True)
        text = dumps(plan.to_message())
        replace_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        if self.client is None:
            # Written rows are not kept: the load generator holds the phase's records already.
            self.client = RecordSink(self.path / "client.parquet", CLIENT_SCHEMA, memory_rows=0, flush_on_append=False)
        return ClientLog(self.client, plan)

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
        write_meta(self.path, self.meta)

    def finish(self, *, partial: bool, build_html: bool = True) -> Path | None:
        """Close the files, mark the run complete or partial, and build report.html."""
        self.queries.close()
        if self.client is not None:
            self.client.close()
        self.write_summary()
        self.update_meta(partial=partial, finished_at=datetime.now(UTC).isoformat())
        self.writer_lock.release()
        if not build_html or not self.summary_rows:
            return None
        return build_report(self.path)
