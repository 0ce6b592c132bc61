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


def _show(value) -> str:
    """A value as the user wrote it: ``0.3``, not numpy 2's ``np.float64(0.3)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _bad(source: str, column: str, mask: np.ndarray, values, need: str) -> TraceError:
    row = int(np.asarray(mask).nonzero()[0][0])
    return TraceError(f"{source}: column {column!r}, row {row + 1}: {_show(values[row])} {need}")


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
        raw_arr = frame["arrival_s"].to_numpy()
        arr = pd.to_numeric(frame["arrival_s"], errors="coerce").to_numpy(dtype=float)
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
        raw_b = frame["batch_size"].to_numpy()
        b = pd.to_numeric(frame["batch_size"], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(b) | (b != np.floor(np.nan_to_num(b))) | (np.nan_to_num(b) < 1)
        if bad.any():
            raise _bad(source, "batch_size", bad, raw_b, "is not an integer >= 1")
        model = frame["model"]
        bad = model.isna().to_numpy() | (model.astype(str).str.len() == 0).to_numpy()
        if bad.any():
            raise _bad(source, "model", bad, model.to_numpy(), "is not a model name")
        extra: dict[str, np.ndarray] = {}
        for col in OPTIONAL_COLUMNS:
            if col not in frame.columns:
                continue
            if col == "request_id":
                extra[col] = frame[col].astype(str).to_numpy(dtype=object)
                continue
            raw = frame[col].to_numpy()
            v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(v) | (np.nan_to_num(v) < 0)
            if bad.any():
                raise _bad(source, col, bad, raw, "is not a count >= 0")
            extra[col] = v.astype(np.int64)
        return cls(arr, b.astype(np.int64), model.astype(str).to_numpy(dtype=object), extra, source)
