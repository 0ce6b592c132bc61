"""Importers from public production traces to the harness's trace schema.

Each importer keeps the source's *arrival process* (arrival_s = seconds since the first record, records
sorted by time, stably) and maps one *size field* of each record onto a ``batch_size`` through a
``SizeMapping``. The public LLM traces count tokens and the Azure Functions trace measures durations,
while the harness serves recommendation-model batches (the Kairos profiles cover batch 10..1000 in steps
of 10). The mapping is therefore a modelling choice, not a unit conversion: it lets a real trace's
burstiness and size variability drive the harness. Its defaults put a median-sized record near the body of
the Kairos batch mix (~170):

==================  =============  ========  ==========================================================
format              field          divisor   why
==================  =============  ========  ==========================================================
``azure-llm``       tokens_in      6         2023 conv trace: median 1,020 context tokens -> 170
``burstgpt``        tokens_in      6         chat prompts like azure-llm; same tokens -> same batch
``mooncake``        tokens_in      45        mean input 7,590 tokens (Mooncake paper) -> 170
``azure-functions`` duration_ms    10        100 ms -> 10, 1.7 s -> 170, >= 10 s -> 1000
==================  =============  ========  ==========================================================

all with ``min_batch=1, max_batch=1000, round_to=10``. Override any of them (``kairos trace import
--size-field/--divisor/--min-batch/--max-batch/--round-to``) and check the result with ``kairos trace info``.

Size fields: LLM formats offer ``tokens_in``, ``tokens_out``, ``tokens_total``; ``azure-functions`` offers
``duration_ms``. LLM imports keep ``tokens_in``/``tokens_out`` columns; every import sets ``request_id`` to
the record's 1-based data row (line, for JSONL) in the source file, so a query can be traced back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from traces.schema import MAX_COUNT, Trace, TraceError

LLM_FIELDS = ("tokens_in", "tokens_out", "tokens_total")
FUNCTION_FIELDS = ("duration_ms",)


@dataclass(frozen=True)
class SizeMapping:
    """``batch = clip(ceil(field / divisor / round_to) * round_to, min_batch, max_batch)``."""

    field: str = "tokens_in"
    divisor: float = 6.0
    min_batch: int = 1
    max_batch: int = 1000
    round_to: int = 10

    def __post_init__(self):
        if not isinstance(self.field, str) or not self.field:
            raise InputError(f"{self.field!r}: must name a size field", field="size_field")
        if not (isinstance(self.divisor, (int, float)) and math.isfinite(self.divisor) and self.divisor > 0):
            raise InputError(f"{self.divisor!r}: must be a positive number", field="divisor")
        for name, value, low in (
            ("min_batch", self.min_batch, 1),
            ("round_to", self.round_to, 1),
            ("max_batch", self.max_batch, self.min_batch),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise InputError(f"{value!r}: must be an integer >= {low}", field=name)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Batch sizes (int64) for an array of field values (>= 0)."""
        steps = np.asarray(values, dtype=float) / self.divisor / self.round_to
        # Rounded to 9 decimals first so float noise cannot push an exact multiple up one step.
        sizes = np.ceil(np.round(steps, 9)) * self.round_to
        return np.clip(sizes, self.min_batch, self.max_batch).astype(np.int64)

    def describe(self) -> str:
        """One line for logs and reports."""
        return (
            f"batch = clip(ceil({self.field} / {self.divisor:g} / {self.round_to}) * {self.round_to}, "
            f"{self.min_batch}, {self.max_batch})"
        )


DEFAULT_MAPPINGS: dict[str, SizeMapping] = {
    "azure-llm": SizeMapping("tokens_in", 6.0),
    "burstgpt": SizeMapping("tokens_in", 6.0),
    "mooncake": SizeMapping("tokens_in", 45.0),
    "azure-functions": SizeMapping("duration_ms", 10.0),
}


# -- shared helpers -----------------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    """A TraceError naming the file when it is missing or not a file."""
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    if not path.is_file():
        raise TraceError(f"{path}: not a file")


def _read_csv(path: Path, fmt: str, columns: tuple[str, ...], text: tuple[str, ...] = ()) -> pd.DataFrame:
    """The CSV at ``path`` with ``columns`` (checked); ``text`` columns are read as strings."""
    _check_file(path)
    try:
        # utf-8-sig: some public traces start with a byte-order mark that would otherwise glue onto the header.
        frame = pd.read_csv(path, dtype={c: str for c in text}, encoding="utf-8-sig")
    except (OSError, ValueError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{path}: cannot read as a {fmt} CSV: {first_line}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TraceError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} "
            f"(a {fmt} trace has columns {', '.join(columns)})"
        )
    if len(frame) == 0:
        raise TraceError(f"{path}: no records")
    return frame


def _numbers(source: Path, column: str, raw, rows: np.ndarray, *, nonneg: bool, count: bool = False) -> np.ndarray:
    """``raw`` as floats; a TraceError naming file, column and source row for the first bad value (not a number, a
    boolean, a list...; negative where ``nonneg``; not an integer up to MAX_COUNT where ``count``)."""
    raw = raw.to_numpy(dtype=object) if isinstance(raw, pd.Series) else np.fromiter(raw, dtype=object, count=len(raw))
    try:
        values = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(dtype=float)
    except (TypeError, ValueError):  # cells pandas cannot even try (a JSON list): one by one
        values = np.array([_float(v) for v in raw], dtype=float)
    flags = np.fromiter((isinstance(v, (bool, np.bool_)) for v in raw), dtype=bool, count=len(raw))
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | flags
        if nonneg:
            bad |= values < 0
        if count:
            bad |= (values != np.floor(values)) | (values > MAX_COUNT)
    if bad.any():
        i = int(bad.nonzero()[0][0])
        need = "is not a number >= 0" if nonneg else "is not a finite number"
        if count and np.isfinite(values[i]) and values[i] >= 0 and not flags[i]:  # a fraction, or too large
            need = f"is not a count (an integer from 0 to {MAX_COUNT})"
        shown = repr(raw[i])
        raise TraceError(f"{source}: column {column!r}, row {rows[i]}: {shown[:80]} {need}")
    return values


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return np.nan


def _build(
    source: Path,
    fmt: str,
    time_s: np.ndarray,
    fields: dict[str, np.ndarray],
    rows: np.ndarray,
    mapping: SizeMapping | None,
    model: str,
    keep: tuple[str, ...] = (),
) -> Trace:
    """Sort by time (stable), shift to the first record, map the size field, attach kept columns."""
    mapping = DEFAULT_MAPPINGS[fmt] if mapping is None else mapping
    if mapping.field not in fields:
        raise InputError(f"{mapping.field!r}: a {fmt} trace offers {', '.join(fields)}", field="size_field")
    if not isinstance(model, str) or not model:
        raise InputError(f"{model!r}: must be a model name", field="model")
    order = np.argsort(time_s, kind="stable")
    arrival_s = time_s[order] - time_s[order[0]]
    extra = {k: fields[k][order].astype(np.int64) for k in keep}
    extra["request_id"] = rows[order].astype(str).astype(object)
    return Trace(
        arrival_s,
        mapping.apply(fields[mapping.field][order]),
        np.full(len(order), model, dtype=object),
        extra,
        str(source),
    )


def _llm_fields(source: Path, in_col: str, out_col: str, raw_in, raw_out, rows) -> dict[str, np.ndarray]:
    """tokens_in, tokens_out and tokens_total from the source's token columns."""
    tokens_in = _numbers(source, in_col, raw_in, rows, nonneg=True, count=True)
    tokens_out = _numbers(source, out_col, raw_out, rows, nonneg=True, count=True)
    return {"tokens_in": tokens_in, "tokens_out": tokens_out, "tokens_total": tokens_in + tokens_out}


# -- formats ------------------------------------------------------------------------------------------------
AZURE_LLM_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
AZURE_FUNCTIONS_COLUMNS = ("app", "func", "end_timestamp", "duration")


def import_azure_llm(path: str | Path, mapping: SizeMapping | None = None, model: str = "rm2") -> Trace:
    """Azure LLM inference trace CSV, 2023 (naive timestamps) or 2024 (timestamps with a UTC offset)."""
    path = Path(path)
    frame = _read_csv(path, "azure-llm", AZURE_LLM_COLUMNS, text=("TIMESTAMP",))
    rows = np.arange(1, len(frame) + 1)
    raw = frame["TIMESTAMP"]
    # ISO8601 parses both "2023-11-16 18:15:46.6805900" and "2024-05-10 00:00:00.009930+00:00";
    # utc=True reads naive stamps as UTC so a file mixing the two still orders correctly.
    stamps = pd.to_datetime(raw.str.strip(), format="ISO8601", utc=True, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise TraceError(
            f"{path}: column 'TIMESTAMP', row {rows[i]}: {raw.iloc[i]!r} is not a timestamp "
            f"(expected e.g. 2023-11-16 18:15:46.6805900 or 2024-05-10 00:00:00.009930+00:00)"
        )
    time_s = (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)
    fields = _llm_fields(
        path, "ContextTokens", "GeneratedTokens", frame["ContextTokens"], frame["GeneratedTokens"], rows
    )
    return _build(path, "azure-llm", time_s, fields, rows, mapping, model, keep=("tokens_in", "tokens_out"))


def import_burstgpt(path: str | Path, mapping: SizeMapping | None = None, model: str = "rm2") -> Trace:
    """BurstGPT CSV (Timestamp in seconds from the trace start; request/response token counts)."""
    path = Path(path)
    frame = _read_csv(path, "burstgpt", BURSTGPT_COLUMNS, text=("Model", "Log Type"))
    rows = np.arange(1, len(frame) + 1)
    time_s = _numbers(path, "Timestamp", frame["Timestamp"], rows, nonneg=False)
    fields = _llm_fields(
        path, "Request tokens", "Response tokens", frame["Request tokens"], frame["Response tokens"], rows
    )
    return _build(path, "burstgpt", time_s, fields, rows, mapping, model, keep=("tokens_in", "tokens_out"))


def import_mooncake(path: str | Path, mapping: SizeMapping | None = None, model: str = "rm2") -> Trace:
    """Mooncake JSONL: one object per line with timestamp (ms), input_length, output_length (hash_ids unused)."""
    path = Path(path)
    _check_file(path)
    records: list[dict] = []
    lines: list[int] = []
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                # ValueError: an integer of more digits than Python converts; RecursionError: nesting past the limit.
                except (ValueError, RecursionError) as exc:
                    why = exc.msg if isinstance(exc, json.JSONDecodeError) else " ".join(str(exc).split())[:100]
                    raise TraceError(f"{path}: row {line_no}: not valid JSON ({why})") from exc
                if not isinstance(record, dict):
                    raise TraceError(f"{path}: row {line_no}: not a JSON object")
                for key in MOONCAKE_KEYS:
                    if key not in record:
                        raise TraceError(
                            f"{path}: missing column {key!r} at row {line_no} "
                            f"(a mooncake record has {', '.join(MOONCAKE_KEYS)})"
                        )
                records.append(record)
                lines.append(line_no)
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read as mooncake JSONL: {exc}") from exc
    if not records:
        raise TraceError(f"{path}: no records")
    rows = np.asarray(lines)
    column = {key: [r[key] for r in records] for key in MOONCAKE_KEYS}
    time_s = _numbers(path, "timestamp", column["timestamp"], rows, nonneg=False) / 1000.0
    fields = _llm_fields(path, "input_length", "output_length", column["input_length"], column["output_length"], rows)
    return _build(path, "mooncake", time_s, fields, rows, mapping, model, keep=("tokens_in", "tokens_out"))


def import_azure_functions(path: str | Path, mapping: SizeMapping | None = None, model: str = "rm2") -> Trace:
    """Azure Functions 2021 CSV (app, func, end_timestamp, duration; seconds); arrival = end - duration."""
    path = Path(path)
    frame = _read_csv(path, "azure-functions", AZURE_FUNCTIONS_COLUMNS, text=("app", "func"))
    rows = np.arange(1, len(frame) + 1)
    end_s = _numbers(path, "end_timestamp", frame["end_timestamp"], rows, nonneg=False)
    duration_s = _numbers(path, "duration", frame["duration"], rows, nonneg=True)
    return _build(
        path, "azure-functions", end_s - duration_s, {"duration_ms": duration_s * 1000.0}, rows, mapping, model
    )


IMPORTERS: dict[str, Callable[..., Trace]] = {
    "azure-llm": import_azure_llm,
    "burstgpt": import_burstgpt,
    "mooncake": import_mooncake,
    "azure-functions": import_azure_functions,
}


def import_trace(fmt: str, path: str | Path, mapping: SizeMapping | None = None, model: str = "rm2") -> Trace:
    """Import ``path`` in format ``fmt`` (a key of ``IMPORTERS``); ``mapping`` defaults per format."""
    if fmt not in IMPORTERS:
        raise InputError(f"{fmt!r}: unknown trace format (choose from {', '.join(IMPORTERS)})", field="format")
    return IMPORTERS[fmt](path, mapping, model)
