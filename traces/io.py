"""Reading and writing traces (``.parquet`` or ``.csv``, chosen by suffix) and locating the shipped samples.

Every read goes through ``Trace.from_frame`` so a bad file is reported by file, column and first bad
(1-based data) row, never by a traceback.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from traces.schema import Trace, TraceError

DEFAULT_TRACE = "kairos_rm2_poisson.parquet"
SUFFIXES = (".parquet", ".csv")

# Columns kept as text when reading CSV, so a model called "1" or an id "007" survives a round trip.
_TEXT_COLUMNS = {"model": str, "request_id": str}


def _format(path: Path) -> str:
    """The file format from the suffix; a TraceError naming the file for anything else."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TraceError(f"{path}: unsupported trace format {suffix or '(no suffix)'!r} (use {' or '.join(SUFFIXES)})")
    return suffix[1:]


def sample_path(name: str = DEFAULT_TRACE) -> Path:
    """Path of a sample trace shipped in ``traces/data`` (e.g. ``DEFAULT_TRACE``)."""
    src = resources.files("traces") / "data" / name
    if not src.is_file():
        shipped = sorted(p.name for p in (resources.files("traces") / "data").iterdir() if p.name.endswith(SUFFIXES))
        raise TraceError(f"{name}: no such shipped sample (shipped: {', '.join(shipped)})")
    # The package is installed as plain files (setuptools package-data), so the traversable is a real path.
    return Path(str(src))


def read_trace(path: str | Path) -> Trace:
    """Read and validate a trace file; errors name the file (and column and row when the data is bad)."""
    path = Path(path)
    fmt = _format(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    if not path.is_file():
        raise TraceError(f"{path}: not a file")
    try:
        if fmt == "parquet":
            table = pq.read_table(path)
            # A damaged string column (invalid UTF-8) reads fine and fails only when pandas touches it, as an
            # ArrowException far from here: checked now, it is one more reason the file cannot be read.
            table.validate(full=True)
            frame = table.to_pandas()
        else:
            frame = pd.read_csv(path, dtype=_TEXT_COLUMNS)
    except MemoryError:
        raise
    except Exception as exc:  # ParserError, EmptyDataError, ArrowInvalid; a damaged file's metadata, anything else
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{path}: cannot read as {fmt}: {first_line[:300]}") from exc
    trace = Trace.from_frame(frame, source=str(path))
    if len(trace) == 0:
        raise TraceError(f"{path}: the trace has no queries")
    return trace


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` (required and optional columns) as parquet or CSV by suffix; returns the path."""
    path = Path(path)
    fmt = _format(path)
    frame = trace.to_frame()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            frame["model"] = frame["model"].astype(str)
            frame.to_parquet(path, index=False)
        else:
            # Default float formatting is repr-exact, so arrival_s survives a CSV round trip bit for bit.
            frame.to_csv(path, index=False)
    except OSError as exc:
        raise TraceError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return path
