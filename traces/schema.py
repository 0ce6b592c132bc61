"""The trace schema every part of the harness reads: per query ``arrival_s``, ``batch_size``, ``model``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.core.errors import InputError

REQUIRED_COLUMNS = ("arrival_s", "batch_size", "model")
OPTIONAL_COLUMNS = ("request_id", "tokens_in", "tokens_out")


class TraceError(InputError):
    """A trace that breaks the schema; the message names the file, column and first bad row (1-based)."""


# Counts (batch sizes, tokens) are checked as float64: above 2**53 an integer is no longer exact (nor fits the int64
# the trace holds it in, near 2**63), so a larger one is refused rather than silently changed.
MAX_COUNT = 2**53


def _show(value) -> str:
    """A value as the user wrote it: ``0.3``, not numpy 2's ``np.float64(0.3)``; a long one cut short."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(source: str, column: str, mask: np.ndarray, values, need: str) -> TraceError:
    row = int(np.asarray(mask).nonzero()[0][0])
    return TraceError(f"{source}: column {column!r}, row {row + 1}: {_show(values[row])} {need}")


def _column(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    """One column of ``frame``; a TraceError when the name appears more than once (which one would be meant?)."""
    col = frame[column]
    if isinstance(col, pd.DataFrame):
        raise TraceError(f"{source}: column {column!r} appears {col.shape[1]} times")
    return col


def _numbers(frame: pd.DataFrame, column: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A column as float64 (NaN where a value is not a number) and as given; a TraceError for a column of timestamps,
    durations or booleans, which would otherwise become nanoseconds or 0/1 without a word."""
    col = _column(frame, column, source)
    if col.dtype.kind in "mMb":
        raise TraceError(f"{source}: column {column!r} holds {col.dtype} values, not plain numbers")
    raw = col.to_numpy()
    try:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    except (TypeError, ValueError):  # cells pandas cannot even try (nested arrays): find the first by hand
        values = np.array([_as_float(v) for v in raw], dtype=float)
    return values, raw


def _as_float(value) -> float:
    if isinstance(value, (bool, np.bool_)):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return np.nan


def _names(frame: pd.DataFrame, column: str, source: str, what: str) -> np.ndarray:
    """A column of names (model, request id) as an object array of non-empty ``str``; integers are taken as their
    digits, anything else (missing, empty, bytes, lists, floats) is a TraceError naming the first such row."""
    raw = _column(frame, column, source).to_numpy(dtype=object)
    kind = pd.api.types.infer_dtype(raw, skipna=False)  # one pass in C: "string", "integer", "mixed", "bytes"...
    if kind == "integer":
        return np.array([str(v) for v in raw], dtype=object)
    if kind in ("string", "empty"):
        empty = raw == ""
        if not empty.any():
            return raw
        raise _bad(source, column, empty, raw, f"is not {what}")
    ok = np.fromiter(
        (
            (isinstance(v, str) and v != "") or (isinstance(v, (int, np.integer)) and not isinstance(v, bool))
            for v in raw
        ),
        dtype=bool,
        count=len(raw),
    )
    raise _bad(source, column, ~ok, raw, f"is not {what}")


def _counts(values: np.ndarray, low: int) -> np.ndarray:
    """Where ``values`` are integers from ``low`` to MAX_COUNT (NaN, inf, fractions, out of range: False)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values == np.floor(values)) & (values >= low) & (values <= MAX_COUNT)


@dataclass(frozen=True)
class Trace:
    """A validated trace: numpy columns, arrivals non-decreasing from the trace start (seconds)."""

    arrival_s: np.ndarray
    batch_size: np.ndarray
    model: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    @property
    def mean_rate_qps(self) -> float:
        """Mean arrival rate, (n - 1) / span, so a scaled trace hits its target exactly."""
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else float("inf")

    @property
    def models(self) -> list[str]:
        """Distinct models, sorted."""
        return sorted(set(self.model.tolist()))

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with the required columns first, then the optional ones present."""
        cols = {"arrival_s": self.arrival_s, "batch_size": self.batch_size, "model": self.model}
        cols.update(self.extra)
        return pd.DataFrame(cols)

    def head(self, n: int) -> Trace:
        """The first ``n`` queries."""
        return Trace(
            self.arrival_s[:n],
            self.batch_size[:n],
            self.model[:n],
            {k: v[:n] for k, v in self.extra.items()},
            self.source,
        )

    def tail_from(self, start: int) -> Trace:
        """The queries from index ``start`` on (arrival times kept)."""
        return Trace(
            self.arrival_s[start:],
            self.batch_size[start:],
            self.model[start:],
            {k: v[start:] for k, v in self.extra.items()},
            self.source,
        )

    def only_model(self) -> str:
        """The one model this trace holds; an error naming the choice when it holds several."""
        if len(self.models) != 1:
            raise InputError(
                f"not given, and {self.source} holds several models ({', '.join(self.models)}): name one", field="model"
            )
        return self.models[0]

    def with_model(self, model: str) -> Trace:
        """The same arrivals and batches, every query for ``model``."""
        return Trace(self.arrival_s, self.batch_size, np.full(len(self), model, dtype=object), self.extra, self.source)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, source: str = "<frame>") -> Trace:
        """Validate a frame against the schema; errors name ``source``, the column and the first bad row."""
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise TraceError(
                f"{source}: missing column(s) {', '.join(map(repr, missing))} "
                f"(a trace needs {', '.join(REQUIRED_COLUMNS)})"
            )
        arr, raw_arr = _numbers(frame, "arrival_s", source)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise _bad(source, "arrival_s", bad, raw_arr, "is not a finite number of seconds")
        if (arr < 0).any():
            raise _bad(source, "arrival_s", arr < 0, raw_arr, "is negative")
        if len(arr) > 1:
            dec = np.diff(arr) < 0
            if dec.any():
                row = int(dec.nonzero()[0][0]) + 1
                raise TraceError(
                    f"{source}: column 'arrival_s', row {row + 1}: {_show(raw_arr[row])} is before "
                    f"the previous row's {_show(raw_arr[row - 1])} (arrivals must be non-decreasing)"
                )
        b, raw_b = _numbers(frame, "batch_size", source)
        bad = ~_counts(b, low=1)
        if bad.any():
            raise _bad(source, "batch_size", bad, raw_b, f"is not an integer from 1 to {MAX_COUNT}")
        model = _names(frame, "model", source, "a model name")
        extra: dict[str, np.ndarray] = {}
        for col in OPTIONAL_COLUMNS:
            if col not in frame.columns:
                continue
            if col == "request_id":
                extra[col] = _names(frame, col, source, "a request id")
                continue
            v, raw = _numbers(frame, col, source)
            bad = ~_counts(v, low=0)
            if bad.any():
                raise _bad(source, col, bad, raw, f"is not a count (an integer from 0 to {MAX_COUNT})")
            extra[col] = v.astype(np.int64)
        return cls(arr, b.astype(np.int64), model, extra, source)
