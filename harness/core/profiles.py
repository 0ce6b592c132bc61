"""Measured latency profiles: service-time samples per (instance_type, model, batch bucket).

A query's service time is ``compute_ms + load_ms``. A batch is served by the smallest profiled bucket that
is >= its size ("rounded up"); a batch above the largest bucket is an error, never an extrapolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from harness.core.errors import InputError

SHIPPED_PROFILES = "aws_recsys_latency.parquet"
PROFILE_COLUMNS = ("instance_type", "model", "batch_size", "compute_ms", "load_ms")


# Batch sizes are checked as float64: above 2**53 an integer is no longer exact (near 2**63 it no longer fits the int64
# it is kept in), so a larger one is refused rather than silently changed.
MAX_BATCH = 2**53


def _show(value) -> str:
    """A cell as the user wrote it (``0.3``, not ``np.float64(0.3)``), a long one cut short."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _column(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    """One column; an InputError when the name appears more than once (which one would be meant?)."""
    col = frame[column]
    if isinstance(col, pd.DataFrame):
        raise InputError(f"{source}: column {column!r} appears {col.shape[1]} times")
    return col


def _names(col: pd.Series, column: str, source: str) -> np.ndarray:
    """A column of names as non-empty ``str`` (integers taken as their digits); an InputError naming the first row
    that is missing, empty or not text (bytes, lists...), which grouping would otherwise drop or mangle silently."""
    raw = col.to_numpy(dtype=object)
    kind = pd.api.types.infer_dtype(raw, skipna=False)  # one pass in C: "string", "integer", "mixed", "bytes"...
    if kind == "integer":
        return np.array([str(v) for v in raw], dtype=object)
    if kind == "string":
        ok = raw != ""
    else:
        ok = np.fromiter(
            (
                (isinstance(v, str) and v != "") or (isinstance(v, (int, np.integer)) and not isinstance(v, bool))
                for v in raw
            ),
            dtype=bool,
            count=len(raw),
        )
    if ok.all():
        return raw
    row = int((~ok).nonzero()[0][0])
    what = "an instance type" if column == "instance_type" else "a model name"
    raise InputError(f"{source}: column {column!r}, row {row + 1}: {_show(raw[row])} is not {what}")


@dataclass(frozen=True)
class BucketTable:
    """Samples for one (instance_type, model): sorted buckets, per-bucket sorted samples and means."""

    buckets: np.ndarray
    samples_ms: tuple[np.ndarray, ...]
    mean_ms: np.ndarray

    def index(self, batch_size: int) -> int:
        """Position of the bucket serving ``batch_size`` (the smallest bucket >= it); -1 if above the largest."""
        i = int(np.searchsorted(self.buckets, batch_size, side="left"))
        return i if i < len(self.buckets) else -1

    @property
    def max_batch(self) -> int:
        """Largest profiled batch size."""
        return int(self.buckets[-1])


class Profile:
    """Latency samples for a set of instance types and models; ``mean_ms``, ``percentile_ms``, ``sample_ms``."""

    def __init__(self, tables: dict[tuple[str, str], BucketTable], source: str = "<memory>"):
        self.tables = tables
        self.source = source

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, *, drop_max: bool = True) -> Profile:
        """Read a profile parquet (or CSV); without a path, the shipped AWS recommendation-model profiles.

        ``drop_max`` drops the single largest sample of each (type, model, batch), as the Kairos authors'
        tooling did before use (one cold-start outlier per bucket).
        """
        if path is None:
            src = resources.files("harness.core") / "data" / SHIPPED_PROFILES
            with src.open("rb") as fh:
                frame = pd.read_parquet(fh)
            name = f"<shipped {SHIPPED_PROFILES}>"
        else:
            p = Path(path)
            name = str(p)
            if not p.exists():
                raise InputError(f"{p}: no such profile file")
            try:
                if p.suffix.lower() == ".csv":
                    frame = pd.read_csv(p)
                else:
                    table = pq.read_table(p)
                    # A damaged string column (invalid UTF-8) reads fine and fails only when pandas touches it, as
                    # an ArrowException far from here: checked now, it is one more reason the file cannot be read.
                    table.validate(full=True)
                    frame = table.to_pandas()
            except MemoryError:
                raise
            except Exception as exc:  # pyarrow raises several types for a non-parquet file
                detail = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise InputError(
                    f"{p}: cannot read as {'CSV' if p.suffix.lower() == '.csv' else 'parquet'} ({detail})"
                ) from None
        return cls.from_frame(frame, source=name, drop_max=drop_max)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, source: str = "<frame>", drop_max: bool = True) -> Profile:
        """Validate a frame with PROFILE_COLUMNS and index it."""
        missing = [c for c in PROFILE_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(
                f"{source}: missing column(s) {', '.join(map(repr, missing))} (need {', '.join(PROFILE_COLUMNS)})"
            )
        if len(frame) == 0:
            raise InputError(f"{source}: no rows")
        cols = {c: _column(frame, c, source) for c in PROFILE_COLUMNS}
        names = {c: _names(cols[c], c, source) for c in ("instance_type", "model")}
        numbers = {}
        for col in ("batch_size", "compute_ms", "load_ms"):
            if cols[col].dtype.kind in "mMb":  # timestamps, durations, booleans: numbers only by accident
                raise InputError(f"{source}: column {col!r} holds {cols[col].dtype} values, not plain numbers")
            try:
                values = pd.to_numeric(cols[col], errors="coerce").to_numpy(dtype=float)
            except (TypeError, ValueError):  # cells pandas cannot even try (nested arrays)
                values = np.full(len(frame), np.nan)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(values) & (values >= (1 if col == "batch_size" else 0))
                if col == "batch_size":
                    ok &= (values == np.floor(values)) & (values <= MAX_BATCH)
            if not ok.all():
                row = int((~ok).nonzero()[0][0])
                need = f"an integer from 1 to {MAX_BATCH}" if col == "batch_size" else "a finite number >= 0"
                raise InputError(f"{source}: column {col!r}, row {row + 1}: {_show(cols[col].iloc[row])} is not {need}")
            numbers[col] = values
        service = numbers["compute_ms"] + numbers["load_ms"]
        if not np.isfinite(service).all():  # each finite, the sum beyond float64
            row = int((~np.isfinite(service)).nonzero()[0][0])
            raise InputError(f"{source}: row {row + 1}: compute_ms + load_ms is not a finite number")
        work = pd.DataFrame(
            {
                "instance_type": names["instance_type"],
                "model": names["model"],
                "batch_size": numbers["batch_size"].astype(np.int64),
                "service_ms": service,
            }
        )
        tables: dict[tuple[str, str], BucketTable] = {}
        for (itype, model), group in work.groupby(["instance_type", "model"], sort=True):
            buckets, samples = [], []
            for batch, g in group.groupby("batch_size", sort=True):
                s = np.sort(g["service_ms"].to_numpy())
                if drop_max and len(s) > 1:
                    s = s[:-1]
                buckets.append(int(batch))
                samples.append(s)
            tables[(str(itype), str(model))] = BucketTable(
                buckets=np.asarray(buckets, dtype=np.int64),
                samples_ms=tuple(samples),
                mean_ms=np.array([s.mean() for s in samples]),
            )
        return cls(tables, source=source)

    def scaled(self, factor: float) -> Profile:
        """The same profile with every service time multiplied by ``factor`` (what-if: a host that adds a share)."""
        return Profile(self.scaled_by({}, factor).tables, source=f"{self.source} x {factor:.3f}")

    def scaled_by(self, factors: dict[tuple[str, str], np.ndarray], default: float = 1.0) -> Profile:
        """The same profile with each (instance_type, model)'s buckets multiplied by their own factors (one per
        bucket, in bucket order); a table without factors by ``default``."""
        tables = {}
        for key, t in self.tables.items():
            f = np.asarray(factors.get(key, np.full(len(t.buckets), default)), dtype=float)
            tables[key] = BucketTable(t.buckets, tuple(s * k for s, k in zip(t.samples_ms, f)), t.mean_ms * f)
        return Profile(tables, source=f"{self.source} x per bucket")

    # -- queries --------------------------------------------------------------------------------------------
    @property
    def instance_types(self) -> list[str]:
        """Instance types present, sorted."""
        return sorted({t for t, _ in self.tables})

    @property
    def models(self) -> list[str]:
        """Models present, sorted."""
        return sorted({m for _, m in self.tables})

    def table(self, instance_type: str, model: str) -> BucketTable:
        """The bucket table for (instance_type, model), or a clear error naming what exists."""
        try:
            return self.tables[(instance_type, model)]
        except KeyError:
            if instance_type not in self.instance_types:
                raise InputError(
                    f"unknown instance type {instance_type!r} in profile {self.source} "
                    f"(known: {', '.join(self.instance_types)})"
                ) from None
            raise InputError(
                f"unknown model {model!r} for {instance_type} in profile {self.source} "
                f"(known: {', '.join(m for t, m in self.tables if t == instance_type)})"
            ) from None

    def check(self, instance_types, models) -> None:
        """Raise InputError unless every (type, model) pair is profiled."""
        for t in instance_types:
            for m in models:
                self.table(t, m)

    def bucket(self, instance_type: str, model: str, batch_size: int) -> tuple[BucketTable, int]:
        """The table and bucket position that serve ``batch_size``; an error above the largest bucket."""
        tab = self.table(instance_type, model)
        i = tab.index(batch_size)
        if i < 0 or batch_size < 1:
            raise InputError(
                f"batch size {batch_size} outside the profiled range 1..{tab.max_batch} "
                f"for {instance_type}/{model} in {self.source}"
            )
        return tab, i

    def mean_ms(self, instance_type: str, model: str, batch_size: int) -> float:
        """Mean service time (compute + load) of the bucket serving ``batch_size``."""
        tab, i = self.bucket(instance_type, model, batch_size)
        return float(tab.mean_ms[i])

    def percentile_ms(self, instance_type: str, model: str, batch_size: int, q: float) -> float:
        """The ``q``-th percentile (0..100, linear interpolation) of that bucket's samples."""
        tab, i = self.bucket(instance_type, model, batch_size)
        return float(np.percentile(tab.samples_ms[i], q))

    def sample_ms(self, instance_type: str, model: str, batch_size: int, rng: np.random.Generator) -> float:
        """One service time drawn uniformly from that bucket's samples."""
        tab, i = self.bucket(instance_type, model, batch_size)
        s = tab.samples_ms[i]
        return float(s[rng.integers(len(s))])

    def max_batch(self, instance_types, model: str) -> int:
        """Largest batch every listed type can serve for ``model``."""
        return min(self.table(t, model).max_batch for t in instance_types)
