"""Plans: which instance mix to run in each time window of a trace, one schema for the file that
``kairos allocate --plan`` writes and ``kairos simulate --plan`` replays (parquet or CSV, chosen by suffix).

A plan file has one row per window, in time order and without gaps (each row's ``start_s`` is the previous row's
``end_s``): ``start_s``, ``end_s`` (seconds on the trace's clock), ``config`` (``TYPE=N,...``, what ``--config``
accepts) and ``usd_per_h`` (the window's hourly price when it was planned; billing uses the price table). A bad file
is reported by file, column and (1-based) row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig
from harness.core.records import FLOAT, STR

PLAN_SCHEMA: dict[str, str] = {"start_s": FLOAT, "end_s": FLOAT, "config": STR, "usd_per_h": FLOAT}
PLAN_SUFFIXES = (".parquet", ".csv")
# How long a new instance takes from its request until it serves: it is requested this long before its window and
# billed from the request. One minute is the order of an on-demand VM's boot plus a model server's start.
DEFAULT_STARTUP_S = 60.0
_GAP_TOLERANCE_S = 1e-6  # a CSV written by another tool may round times; windows closer than this still touch


@dataclass(frozen=True)
class PlanWindow:
    """One row of a plan: the pool to run from ``start_s`` to ``end_s`` and its price when planned."""

    start_s: float
    end_s: float
    pool: PoolConfig
    usd_per_h: float

    @property
    def duration_s(self) -> float:
        """Length of the window."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Plan:
    """Windows in time order, each starting where the previous one ends."""

    windows: tuple[PlanWindow, ...]
    source: str = "<memory>"

    def __post_init__(self):
        if not self.windows:
            raise InputError(f"{self.source}: the plan has no windows")
        for k, w in enumerate(self.windows):
            where = f"{self.source}: window {k + 1}"
            if not (math.isfinite(w.start_s) and math.isfinite(w.end_s) and w.end_s > w.start_s):
                raise InputError(f"{where}: end_s {w.end_s!r} must be after start_s {w.start_s!r}")
            if k and abs(w.start_s - self.windows[k - 1].end_s) > _GAP_TOLERANCE_S:
                raise InputError(f"{where}: start_s {w.start_s!r} is not the previous window's end_s")

    @property
    def start_s(self) -> float:
        """Start of the first window."""
        return self.windows[0].start_s

    @property
    def end_s(self) -> float:
        """End of the last window."""
        return self.windows[-1].end_s

    @property
    def instance_types(self) -> list[str]:
        """Every type the plan uses, in order of first use."""
        return list(dict.fromkeys(t for w in self.windows for t, _ in w.pool.counts))

    def max_counts(self) -> dict[str, int]:
        """Per type, the most instances any window runs."""
        out = {t: 0 for t in self.instance_types}
        for w in self.windows:
            for t, n in w.pool.counts:
                out[t] = max(out[t], n)
        return out

    def window_index(self, time_s: np.ndarray) -> np.ndarray:
        """The window each time falls in, -1 outside the plan (a window holds its start; the last also its end)."""
        t = np.asarray(time_s, dtype=float)
        ends = np.array([w.end_s for w in self.windows])
        k = np.searchsorted(ends, t, side="right")
        k = np.where(t == ends[-1], len(ends) - 1, k)
        return np.where((t < self.start_s) | (k >= len(ends)), -1, k)

    def to_frame(self) -> pd.DataFrame:
        """The plan as a frame with exactly PLAN_SCHEMA's columns."""
        return pd.DataFrame(
            {
                "start_s": np.array([w.start_s for w in self.windows], dtype=float),
                "end_s": np.array([w.end_s for w in self.windows], dtype=float),
                "config": np.array([str(w.pool) for w in self.windows], dtype=object),
                "usd_per_h": np.array([w.usd_per_h for w in self.windows], dtype=float),
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str = "<memory>") -> Plan:
        """Validate a frame against PLAN_SCHEMA; an InputError names the source, column and first bad row."""
        missing = [c for c in PLAN_SCHEMA if c not in frame.columns]
        if missing:
            raise InputError(f"{source}: missing column {missing[0]!r} (a plan has columns {', '.join(PLAN_SCHEMA)})")
        if len(frame) == 0:
            raise InputError(f"{source}: the plan has no windows")
        start = _non_negative(frame, "start_s", source)
        end = _non_negative(frame, "end_s", source)
        price = _non_negative(frame, "usd_per_h", source, what="a price in USD per hour >= 0")
        bad = ~(end > start)
        if bad.any():
            row = int(bad.nonzero()[0][0])
            raise InputError(
                f"{source}: column 'end_s', row {row + 1}: {end[row]:g} is not after start_s {start[row]:g}"
            )
        gap = np.abs(start[1:] - end[:-1]) > _GAP_TOLERANCE_S
        if gap.any():
            row = int(gap.nonzero()[0][0]) + 1
            raise InputError(
                f"{source}: column 'start_s', row {row + 1}: {start[row]:g} is not the previous row's end_s "
                f"{end[row - 1]:g} (windows follow each other in time order, without gaps)"
            )
        pools = []
        for row, text in enumerate(frame["config"].tolist()):
            if not isinstance(text, str):
                raise InputError(f"{source}: column 'config', row {row + 1}: {text!r} is not TYPE=N,...")
            try:
                pools.append(PoolConfig.parse(text))
            except InputError as exc:
                raise InputError(f"{source}: column 'config', row {row + 1}: {exc.message}") from None
        windows = tuple(
            PlanWindow(float(a), float(b), pool, float(p)) for a, b, pool, p in zip(start, end, pools, price)
        )
        return cls(windows, source)


def _non_negative(frame: pd.DataFrame, column: str, source: str, what: str = "a number of seconds >= 0") -> np.ndarray:
    """A numeric column as float64; an InputError at the first value that is not a finite number >= 0."""
    raw = frame[column]
    if isinstance(raw, pd.DataFrame):
        raise InputError(f"{source}: column {column!r} appears {raw.shape[1]} times")
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    if raw.dtype.kind == "b":
        values = np.full(len(values), np.nan)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise InputError(f"{source}: column {column!r}, row {row + 1}: {raw.iloc[row]!r} is not {what}")
    return values


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in PLAN_SUFFIXES:
        raise InputError(f"{path}: unsupported plan format {suffix or '(no suffix)'!r} (use .parquet or .csv)")
    return suffix[1:]


def read_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; errors name the file, and the column and row when the data is bad."""
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        frame = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, dtype={"config": str})
    except MemoryError:
        raise
    except Exception as exc:  # ParserError, EmptyDataError, ArrowInvalid: anything that is not a readable table
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read as {fmt}: {first_line[:300]}") from exc
    return Plan.from_frame(frame, source=str(path))


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as parquet or CSV by suffix; returns the path."""
    path = Path(path)
    fmt = _format(path)
    frame = plan.to_frame()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)  # repr-exact floats: times survive the round trip bit for bit
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return path
