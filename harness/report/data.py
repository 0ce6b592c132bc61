"""Reading a run directory and shaping its data for the report: pure functions, no HTML.

A run directory holds ``summary.parquet`` (one row per dispatcher x rate step), optionally ``queries.parquet`` (one
row per query: a single file, or the directory of parquet parts ``RunDir`` streams), ``run.json`` (metadata) and
``allocation.parquet``. A run that was killed leaves run.json saying ``partial: true`` (or without ``finished_at``): it
is read as it is, and marked partial. Data is aggregated here (CDF quantile points, time bins, count tables) so the
page stays small whatever the number of queries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.records import OK, latency_ms

CDF_POINTS = 2000
UTIL_BINS = 100
BATCH_BUCKET = 100
BATCH_TOP = 1000

_SUMMARY_FLOATS = (
    "offered_qps",
    "achieved_qps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "p99_ci_low_ms",
    "p99_ci_high_ms",
    "violation_rate",
    "cost_per_h",
    "qps_per_dollar",
    "allowable_qps",
)
_SUMMARY_OPTIONAL_FLOATS = (
    "sim_p99_ms",
    "sim_p99_ci_low_ms",
    "sim_p99_ci_high_ms",
    "sim_allowable_qps",
    "sim_allowable_host_adjusted_qps",
    "harness_saturated_qps",
    "send_lag_p99_ms",
    "loadgen_cpu_percent",
    "bracket_low_qps",
    "bracket_high_qps",
)


@dataclass(frozen=True)
class RunData:
    """What a run directory holds, normalized (summary and queries carry the columns the report reads)."""

    run_dir: Path
    meta: dict
    summary: pd.DataFrame
    queries: pd.DataFrame | None
    allocation: pd.DataFrame | None
    notes: tuple[str, ...] = ()
    faults: pd.DataFrame | None = None  # faults.parquet: each chaos event in force in a phase, with its cost


def finite_values(values) -> np.ndarray:
    """The finite entries of ``values`` as a float array."""
    return np.asarray(values, dtype=float)[np.isfinite(np.asarray(values, dtype=float))]


def cdf_points(latencies, n: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points (x, y) of the empirical CDF; non-finite latencies count as never served (y stays < 1)."""
    lat = np.asarray(latencies, dtype=float).ravel()
    finite = np.sort(lat[np.isfinite(lat)])
    if finite.size == 0 or n < 1:
        return np.empty(0), np.empty(0)
    # Evenly spaced order statistics: exact CDF values at those points, whatever the number of queries.
    idx = np.unique(np.linspace(0, finite.size - 1, min(n, finite.size)).round().astype(np.int64))
    return finite[idx], (idx + 1) / lat.size


def utilization(queries: pd.DataFrame, bins=UTIL_BINS) -> pd.DataFrame:
    """Busy fraction of each instance per time bin (rows: instance_id, columns: bin start, same clock as input)."""
    start = queries["start_s"].to_numpy(float)
    end = queries["finish_s"].to_numpy(float)
    if "backend_finish_s" in queries:
        # The backend's own finish excludes the response's trip back to the client: closer to when it was busy.
        backend = queries["backend_finish_s"].to_numpy(float)
        end = np.where(np.isfinite(backend), backend, end)
    inst = queries["instance_id"]
    ok = (
        np.isfinite(start)
        & np.isfinite(end)
        & (end >= start)
        & inst.notna().to_numpy()
        & (inst.astype(str).to_numpy() != "")
    )
    if np.ndim(bins) == 0:
        if not ok.any():
            return pd.DataFrame()
        lo, hi = float(start[ok].min()), float(end[ok].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    # Relative to the first edge: epoch seconds summed over a million queries would lose sub-second precision.
    rel_edges = edges - edges[0]
    width = np.diff(rel_edges)
    rows = {}
    ids = inst[ok].astype(str).to_numpy()
    s_all, f_all = start[ok] - edges[0], end[ok] - edges[0]
    for iid, idx in pd.Series(ids).groupby(ids, sort=True).indices.items():
        # Busy time in [0, t] = sum over s_i < t of (t - s_i) minus sum over f_i < t of (t - f_i): two prefix sums.
        s, f = np.sort(s_all[idx]), np.sort(f_all[idx])
        cs, cf = np.concatenate([[0.0], np.cumsum(s)]), np.concatenate([[0.0], np.cumsum(f)])
        k, j = np.searchsorted(s, rel_edges), np.searchsorted(f, rel_edges)
        busy = (k * rel_edges - cs[k]) - (j * rel_edges - cf[j])
        rows[iid] = np.diff(busy) / width
    return pd.DataFrame.from_dict(rows, orient="index", columns=edges[:-1]) if rows else pd.DataFrame()


def batch_buckets(max_batch: float, bucket: int = BATCH_BUCKET, top: int = BATCH_TOP) -> tuple[np.ndarray, list[str]]:
    """Bucket edges 0, bucket, ... (at least up to ``top``) and their labels '0-100', '100-200', ..."""
    hi = max(top, int(math.ceil(max_batch / bucket)) * bucket if math.isfinite(max_batch) else top)
    edges = np.arange(0, hi + bucket, bucket)
    return edges, [f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:])]


def batch_heatmap(queries: pd.DataFrame, bucket: int = BATCH_BUCKET) -> pd.DataFrame:
    """Counts of dispatched queries per instance type (rows) and batch-size bucket (columns, right-closed)."""
    itype = queries["instance_type"].astype(object) if "instance_type" in queries else pd.Series(None, queries.index)
    if "instance_id" in queries:
        sent = queries["instance_id"].notna() & (queries["instance_id"].astype(str) != "")
    else:
        sent = itype.notna() & (itype.astype(str) != "")
    batch = queries["batch_size"].to_numpy(float)[sent.to_numpy()]
    types = itype[sent].where(itype[sent].notna() & (itype[sent].astype(str) != ""), "unknown").astype(str)
    edges, labels = batch_buckets(float(np.nanmax(batch)) if batch.size else 0.0, bucket)
    cut = pd.cut(batch, edges, labels=labels, right=True, include_lowest=True)
    counts = pd.crosstab(types.to_numpy(), cut, dropna=False) if batch.size else pd.DataFrame()
    counts = counts.reindex(columns=labels, fill_value=0).fillna(0).astype(np.int64)
    counts.index.name, counts.columns.name = "instance_type", "batch_size"
    return counts.sort_index()


def shown_step(steps: pd.DataFrame) -> pd.Series | None:
    """The step a dispatcher's distributions are drawn at: nearest its allowable rate, else its highest VALID rate."""
    if steps.empty:
        return None
    allowable = steps["allowable_qps"].to_numpy(float)
    allowable = allowable[np.isfinite(allowable)]
    valid = steps[steps["valid"].astype(bool)]
    if allowable.size:
        pool = valid if len(valid) else steps
        return pool.loc[(pool["offered_qps"] - allowable[0]).abs().idxmin()]
    if len(valid):
        return valid.loc[valid["offered_qps"].idxmax()]
    return None


def step_queries(queries: pd.DataFrame, dispatcher: str, step: pd.Series | None) -> tuple[pd.DataFrame, str]:
    """A dispatcher's queries at ``step`` (by phase, else offered rate; all of them if neither matches), and a label."""
    mine = queries[queries["dispatcher"] == dispatcher]
    if step is not None:
        if "phase" in mine and pd.notna(step.get("phase")):
            sel = mine[mine["phase"] == step["phase"]]
            if len(sel):
                return sel, f"{dispatcher} @ {step['offered_qps']:.1f} qps (phase {int(step['phase'])})"
        if "offered_qps" in mine and math.isfinite(float(step["offered_qps"])):
            sel = mine[np.isclose(mine["offered_qps"].to_numpy(float), float(step["offered_qps"]), rtol=1e-6)]
            if len(sel):
                return sel, f"{dispatcher} @ {step['offered_qps']:.1f} qps"
    return mine, f"{dispatcher}, all phases"


def bracket(steps: pd.DataFrame) -> tuple[float, float]:
    """(passing, failing) offered rates around a dispatcher's allowable throughput (NaN where not measured)."""
    if "bracket_low_qps" in steps and "bracket_high_qps" in steps:
        # The sweep's own bracket, where it stamped one.
        low, high = finite_values(steps["bracket_low_qps"]), finite_values(steps["bracket_high_qps"])
        if low.size or high.size:
            return (float(low[0]) if low.size else math.nan, float(high[0]) if high.size else math.nan)
    allowable = steps["allowable_qps"].to_numpy(float)
    allowable = allowable[np.isfinite(allowable)]
    valid = steps.loc[steps["valid"].astype(bool), "offered_qps"].to_numpy(float)
    lo = float(allowable[0]) if allowable.size else (float(valid.max()) if valid.size else math.nan)
    failing = steps.loc[~steps["valid"].astype(bool), "offered_qps"].to_numpy(float)
    above = failing[failing > lo] if math.isfinite(lo) else failing
    return lo, float(above.min()) if above.size else math.nan


def normalize_summary(frame: pd.DataFrame, source: str, qos_ms: float | None = None) -> pd.DataFrame:
    """The summary with the report's columns (``policy``/``rate_qps`` accepted as older names)."""
    frame = frame.copy()
    if "dispatcher" not in frame and "policy" in frame:
        frame["dispatcher"] = frame["policy"]
    if "offered_qps" not in frame and "rate_qps" in frame:
        frame["offered_qps"] = frame["rate_qps"]
    for col in ("dispatcher", "offered_qps", "p99_ms"):
        if col not in frame:
            raise InputError(f"{source}: missing column {col!r}")
    frame["dispatcher"] = frame["dispatcher"].astype(str)
    if "phase" not in frame:
        frame["phase"] = np.arange(len(frame))
    for col in _SUMMARY_FLOATS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float) if col in frame else math.nan
    for col in _SUMMARY_OPTIONAL_FLOATS:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    if "valid" not in frame:
        frame["valid"] = frame["p99_ms"] <= qos_ms if qos_ms is not None else False
    frame["valid"] = frame["valid"].fillna(False).astype(bool)
    frame["invalid_reason"] = frame["invalid_reason"].fillna("").astype(str) if "invalid_reason" in frame else ""
    return frame.sort_values("phase", kind="stable").reset_index(drop=True)


def normalize_queries(frame: pd.DataFrame, source: str, pool: list | None = None) -> pd.DataFrame:
    """The per-query records with ``dispatcher``, ``latency_ms`` (+inf when not served) and known instance types."""
    frame = frame.copy()
    if "dispatcher" not in frame and "policy" in frame:
        frame["dispatcher"] = frame["policy"]
    for col in ("dispatcher", "status"):
        if col not in frame:
            raise InputError(f"{source}: missing column {col!r}")
    frame["dispatcher"] = frame["dispatcher"].astype(str)
    if "arrival_s" in frame and "finish_s" in frame:
        # Live records already carry the intended send time as arrival_s and the client's finish as finish_s.
        frame["latency_ms"] = latency_ms(frame)
    elif "latency_ms" in frame:
        # Older files carry only the client's latency.
        served = frame["status"].astype(str).to_numpy() == OK
        lat = pd.to_numeric(frame["latency_ms"], errors="coerce").to_numpy(float)
        frame["latency_ms"] = np.where(served & np.isfinite(lat), lat, np.inf)
    else:
        raise InputError(f"{source}: missing column 'latency_ms' (or 'arrival_s' and 'finish_s')")
    types = {str(p["id"]): p.get("instance_type") for p in pool or () if isinstance(p, dict) and "id" in p}
    if types and "instance_id" in frame:
        # Live records may lack the type; the pool in run.json knows it.
        known = frame["instance_type"] if "instance_type" in frame else pd.Series(None, frame.index, dtype=object)
        missing = known.isna() | (known.astype(str) == "")
        frame["instance_type"] = known.astype(object).where(~missing, frame["instance_id"].astype(str).map(types))
    return frame


def instance_types(queries: pd.DataFrame, meta: dict) -> dict[str, str]:
    """instance_id -> instance_type from the records, completed by run.json's pool."""
    types = {}
    pool = meta.get("pool")
    for p in pool if isinstance(pool, list) else ():
        if isinstance(p, dict) and p.get("id") is not None and p.get("instance_type"):
            types[str(p["id"])] = str(p["instance_type"])
    if "instance_type" in queries and "instance_id" in queries:
        pairs = queries[["instance_id", "instance_type"]].dropna()
        pairs = pairs[(pairs["instance_type"].astype(str) != "") & (pairs["instance_id"].astype(str) != "")]
        for iid, itype in pairs.drop_duplicates("instance_id").itertuples(index=False):
            types.setdefault(str(iid), str(itype))
    return types


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-parquet file
        raise InputError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None


def fault_timeline(queries: pd.DataFrame, armed_epoch: float, bin_s: float = 1.0) -> pd.DataFrame:
    """p99 latency and queries not served per ``bin_s`` of arrival time, counted from ``armed_epoch`` (seconds)."""
    t = (queries["arrival_s"].to_numpy(float) - armed_epoch) // bin_s * bin_s
    frame = pd.DataFrame({"t_s": t, "latency_ms": latency_ms(queries), "served": queries["status"].to_numpy() == OK})
    frame = frame[np.isfinite(frame["t_s"])]

    def p99(lat: pd.Series) -> float:
        return float(np.quantile(lat.to_numpy(float), 0.99, method="inverted_cdf")) if len(lat) else math.nan

    grouped = frame.groupby("t_s")
    return pd.DataFrame(
        {"p99_ms": grouped["latency_ms"].apply(p99), "not_served": grouped["served"].apply(lambda s: int((~s).sum()))}
    ).reset_index()


def _optional_table(path: Path, notes: list[str]) -> pd.DataFrame | None:
    """An optional section's table, or None; one that cannot be read becomes a note, and the report goes on."""
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        notes.append(f"{path}: not shown ({type(exc).__name__}: {exc})")
        return None


def load_run(run_dir: Path) -> RunData:
    """Read and normalize a run directory (InputError naming the file when something required is missing)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    summary_path = run_dir / "summary.parquet"
    if not summary_path.is_file():
        raise InputError(f"{summary_path}: not found (a run directory holds summary.parquet)")
    meta: dict = {}
    meta_path = run_dir / "run.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise InputError(f"{meta_path}: expected a JSON object")
        if "started_at" in meta and not meta.get("finished_at"):
            meta["partial"] = True  # never finished: killed, whatever run.json said when it was last written
    qos = meta.get("qos_ms") if isinstance(meta.get("qos_ms"), (int, float)) else None
    summary = normalize_summary(_read_parquet(summary_path), str(summary_path), qos)
    queries = None
    queries_path = run_dir / "queries.parquet"
    if queries_path.exists():  # a file, or a directory of parts (a killed run's holds the phases written so far)
        pool = meta.get("pool") if isinstance(meta.get("pool"), list) else None
        queries = normalize_queries(_read_parquet(queries_path), str(queries_path), pool)
    notes: list[str] = []
    allocation = _optional_table(run_dir / "allocation.parquet", notes)
    faults = _optional_table(run_dir / "faults.parquet", notes)
    return RunData(run_dir, meta, summary, queries, allocation, tuple(notes), faults)
