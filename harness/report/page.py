"""``kairos report``: one self-contained HTML page (interactive charts and tables) from a run directory.

A run directory holds ``summary.parquet`` (one row per dispatcher x rate step), optionally ``queries.parquet`` (one
row per query), ``run.json`` (metadata) and ``allocation.parquet``. The page inlines plotly.js once and draws every
chart client-side, so it opens offline. Data is aggregated here (CDF quantile points, time bins, count tables) so the
page stays small whatever the number of queries. The pure helpers (``cdf_points``, ``utilization``,
``batch_heatmap``, ``shown_step``) hold the data shaping; ``render_report`` builds the page; ``build_report`` does I/O.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError

CHART_P99 = "chart-p99-vs-load"
CHART_CDF = "chart-latency-cdf"
CHART_UTIL = "chart-utilization"
CHART_BATCH = "chart-batch-placement"
CHART_IDS = (CHART_P99, CHART_CDF, CHART_UTIL, CHART_BATCH)

PARTIAL_BANNER = "partial run: interrupted; numbers cover completed phases only"
CDF_POINTS = 2000
UTIL_BINS = 100
BATCH_BUCKET = 100
BATCH_TOP = 1000
# Tableau 10: distinguishable, colour-blind tolerable; a dispatcher keeps its colour across charts.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")

_SUMMARY_FLOATS = ("offered_qps", "achieved_qps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms",
                   "p99_ci_low_ms", "p99_ci_high_ms", "violation_rate", "cost_per_h", "qps_per_dollar",
                   "allowable_qps")
_SUMMARY_OPTIONAL_FLOATS = ("sim_p99_ms", "sim_allowable_qps", "send_lag_p99_ms", "loadgen_cpu_percent",
                            "bracket_low_qps", "bracket_high_qps")


@dataclass(frozen=True)
class RunData:
    """What a run directory holds, normalized (summary and queries carry the columns the report reads)."""

    run_dir: Path
    meta: dict
    summary: pd.DataFrame
    queries: pd.DataFrame | None
    allocation: pd.DataFrame | None
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- pure data shaping


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
    ok = (np.isfinite(start) & np.isfinite(end) & (end >= start) & inst.notna().to_numpy()
          & (inst.astype(str).to_numpy() != ""))
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
        low, high = _finite(steps["bracket_low_qps"]), _finite(steps["bracket_high_qps"])
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
    served = frame["status"].astype(str).to_numpy() == "ok"
    if "arrival_s" in frame and "finish_s" in frame:
        lat = (pd.to_numeric(frame["finish_s"], errors="coerce").to_numpy(float)
               - pd.to_numeric(frame["arrival_s"], errors="coerce").to_numpy(float)) * 1000.0
    elif "latency_ms" not in frame:
        raise InputError(f"{source}: missing column 'latency_ms' (or 'arrival_s' and 'finish_s')")
    else:
        lat = np.full(len(frame), np.nan)
    if "latency_ms" in frame:
        # The client's own measure (from the intended send time) where it has one.
        client = pd.to_numeric(frame["latency_ms"], errors="coerce").to_numpy(float)
        lat = np.where(np.isfinite(client), client, lat)
    frame["latency_ms"] = np.where(served & np.isfinite(lat), lat, np.inf)
    types = {str(p["id"]): p.get("instance_type") for p in pool or () if isinstance(p, dict) and "id" in p}
    if types and "instance_id" in frame:
        # Live records may lack the type; the pool in run.json knows it.
        known = frame["instance_type"] if "instance_type" in frame else pd.Series(None, frame.index, dtype=object)
        missing = known.isna() | (known.astype(str) == "")
        frame["instance_type"] = known.astype(object).where(~missing, frame["instance_id"].astype(str).map(types))
    return frame


# ---------------------------------------------------------------- figures (plotly dicts)


def _finite(values) -> np.ndarray:
    return np.asarray(values, dtype=float)[np.isfinite(np.asarray(values, dtype=float))]


def _fmt(value, digits: int = 1, unit: str = "") -> str:
    """A number for display: '–' for missing, '∞' for infinite."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}{unit}"
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return ("∞" if value > 0 else "-∞") + unit
        return f"{float(value):,.{digits}f}{unit}"
    return str(value)


def _base_layout(title: str, **extra) -> dict:
    # template "none": plotly's default template would add ~10 kB of styling to every chart.
    layout = dict(template="none", title=dict(text=title, x=0.01), margin=dict(l=70, r=30, t=60, b=60),
                  hovermode="closest", legend=dict(orientation="v"), font=dict(family="sans-serif", size=12),
                  plot_bgcolor="white", paper_bgcolor="white")
    layout.update(extra)
    return layout


def _axis(title: str, **extra) -> dict:
    return dict(title=dict(text=title), showgrid=True, gridcolor="#e5e5e5", zeroline=False, showline=True,
                linecolor="#888", **extra)


def p99_figure(summary: pd.DataFrame, qos_ms: float | None, colors: dict[str, str]) -> dict:
    """p99 versus offered load per dispatcher: VALID filled, INVALID hollow, QoS and allowable markers, sim dashed."""
    data, shapes, annotations = [], [], []
    finite = _finite(summary["p99_ms"])
    top = max([*finite, qos_ms or 0.0, 1.0]) * 2.0  # where infinite p99 (dropped queries) is drawn
    has_sim = "sim_p99_ms" in summary and np.isfinite(summary["sim_p99_ms"].to_numpy(float)).any()
    for d, steps in summary.groupby("dispatcher", sort=False):
        steps = steps.sort_values("offered_qps")
        color = colors[d]
        p99 = steps["p99_ms"].to_numpy(float)
        valid = steps["valid"].to_numpy(bool)
        inf = np.isinf(p99)
        symbols = np.where(inf, "triangle-up-open", np.where(valid, "circle", "circle-open"))
        hover = [f"{escape(d)}<br>offered {_fmt(x)} qps<br>p99 {_fmt(y)} ms<br>"
                 + ("VALID" if v else f"INVALID {escape(r)}")
                 for x, y, v, r in zip(steps["offered_qps"], p99, valid, steps["invalid_reason"])]
        lo, hi = steps["p99_ci_low_ms"].to_numpy(float), steps["p99_ci_high_ms"].to_numpy(float)
        ok_ci = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(p99)
        up, down = np.full(p99.shape, np.nan), np.full(p99.shape, np.nan)
        up[ok_ci], down[ok_ci] = hi[ok_ci] - p99[ok_ci], p99[ok_ci] - lo[ok_ci]
        data.append(dict(type="scatter", mode="lines+markers", name=escape(d), legendgroup=d,
                         x=steps["offered_qps"].to_numpy(float), y=np.where(inf, top, p99),
                         text=hover, hovertemplate="%{text}<extra></extra>",
                         line=dict(color=color, width=2),
                         marker=dict(color=color, size=10, symbol=symbols, line=dict(color=color, width=2)),
                         error_y=dict(type="data", symmetric=False, visible=bool(ok_ci.any()), color=color,
                                      thickness=1, width=3, array=up, arrayminus=down)))
        if has_sim:
            sim = steps["sim_p99_ms"].to_numpy(float)
            data.append(dict(type="scatter", mode="lines", name=f"{escape(d)} (simulated)", legendgroup=d,
                             x=steps["offered_qps"].to_numpy(float), y=np.where(np.isinf(sim), top, sim),
                             line=dict(color=color, width=1.5, dash="dash"),
                             hovertemplate=f"{escape(d)} simulated<br>%{{x:.1f}} qps: p99 %{{y:.1f}} ms<extra></extra>"))
        allowable = _finite(steps["allowable_qps"])
        if allowable.size:
            shapes.append(dict(type="line", xref="x", yref="paper", x0=allowable[0], x1=allowable[0], y0=0, y1=1,
                               line=dict(color=color, width=1.5, dash="dot")))
            annotations.append(dict(x=allowable[0], y=1.0, xref="x", yref="paper", yanchor="bottom",
                                    text=f"{escape(d)}: {allowable[0]:.1f}", showarrow=False,
                                    font=dict(color=color, size=11), textangle=-30))
    # Legend-only entries explaining the marker fill.
    for name, symbol in (("VALID (filled)", "circle"), ("INVALID (hollow)", "circle-open"),
                         ("p99 = ∞ (dropped)", "triangle-up-open")):
        data.append(dict(type="scatter", mode="markers", name=name, x=[None], y=[None], hoverinfo="skip",
                         marker=dict(color="#555", size=10, symbol=symbol, line=dict(color="#555", width=2))))
    if qos_ms:
        shapes.append(dict(type="line", xref="paper", yref="y", x0=0, x1=1, y0=qos_ms, y1=qos_ms,
                           line=dict(color="#c00", width=1.5, dash="dash")))
        annotations.append(dict(x=0, y=qos_ms, xref="paper", yref="y", xanchor="left", yanchor="bottom",
                                text=f"QoS p99 ≤ {qos_ms:g} ms", showarrow=False, font=dict(color="#c00")))
    positive = finite[finite > 0]
    log_y = positive.size > 1 and positive.max() / positive.min() > 20
    return dict(data=data, layout=_base_layout(
        "p99 latency vs offered load (dotted verticals: allowable throughput)",
        xaxis=_axis("offered load (queries/s)"),
        yaxis=_axis("p99 latency (ms)" + (", log scale" if log_y else ""), type="log" if log_y else "linear"),
        shapes=shapes, annotations=annotations, height=480, margin=dict(l=70, r=30, t=90, b=60)))


def cdf_figure(curves: list[tuple[str, str, np.ndarray, np.ndarray, float]], qos_ms: float | None) -> dict:
    """Latency CDFs, one line per (label, colour, x, y, share dropped), log-x, with the QoS line."""
    data = []
    for label, color, x, y, dropped in curves:
        name = label + (f" ({100 * dropped:.2f}% not served)" if dropped > 0 else "")
        data.append(dict(type="scatter", mode="lines", name=escape(name), x=np.round(x, 3), y=np.round(y, 6),
                         line=dict(color=color, width=2, shape="hv"),
                         hovertemplate=f"{escape(label)}<br>%{{x:.1f}} ms: %{{y:.4f}}<extra></extra>"))
    shapes = [dict(type="line", xref="paper", yref="y", x0=0, x1=1, y0=0.99, y1=0.99,
                   line=dict(color="#888", width=1, dash="dot"))]
    annotations = [dict(x=0, y=0.99, xref="paper", yref="y", xanchor="left", yanchor="top", text="p99",
                        showarrow=False, font=dict(color="#888"))]
    if qos_ms:
        shapes.append(dict(type="line", xref="x", yref="paper", x0=qos_ms, x1=qos_ms, y0=0, y1=1,
                           line=dict(color="#c00", width=1.5, dash="dash")))
        annotations.append(dict(x=math.log10(qos_ms), y=0.02, xref="x", yref="paper", xanchor="left",
                                text=f" QoS {qos_ms:g} ms", showarrow=False, font=dict(color="#c00")))
    return dict(data=data, layout=_base_layout(
        "Latency CDF per dispatcher (at its allowable rate, else its highest VALID rate)",
        xaxis=_axis("latency (ms), log scale", type="log"), yaxis=_axis("fraction of queries", range=[0, 1.02]),
        shapes=shapes, annotations=annotations, height=460))


def _stacked_heatmaps(panels: list[tuple[str, pd.DataFrame, list, list, np.ndarray | None]], title: str,
                      x_title: str, colorbar: str, zmax: float, row_px: int, hover: str) -> dict:
    """Heatmaps stacked vertically (one per panel: label, z frame, x, y labels, text) sharing one colour scale."""
    from plotly.subplots import make_subplots

    # Sized in pixels so that a panel's tick labels never run into the next panel's title.
    heights = [max(2, len(p[3])) * row_px for p in panels]
    gap_px = 70
    total = sum(heights) + gap_px * (len(panels) - 1)
    fig = make_subplots(rows=len(panels), cols=1, subplot_titles=[escape(p[0]) for p in panels],
                        row_heights=[h / sum(heights) for h in heights], vertical_spacing=gap_px / total if len(panels) > 1 else 0.0)
    layout = fig.to_plotly_json()["layout"]
    data = []
    for i, (_, z, x, y, text) in enumerate(panels, start=1):
        trace = dict(type="heatmap", z=np.round(z.to_numpy(float), 4), x=x, y=y, coloraxis="coloraxis",
                     xaxis=f"x{i if i > 1 else ''}", yaxis=f"y{i if i > 1 else ''}", hovertemplate=hover,
                     xgap=1, ygap=1)
        if text is not None:
            trace.update(text=text, texttemplate="%{text}", textfont=dict(size=10))
        data.append(trace)
        layout[f"xaxis{i if i > 1 else ''}"].update(showgrid=False)
        if i == len(panels):
            layout[f"xaxis{i if i > 1 else ''}"].update(title=dict(text=x_title))
        layout[f"yaxis{i if i > 1 else ''}"].update(type="category", automargin=True)
    layout.update(_base_layout(title, height=total + 150, margin=dict(l=140, r=30, t=90, b=60),
                               coloraxis=dict(cmin=0, cmax=zmax, colorscale="Viridis",
                                              colorbar=dict(title=dict(text=colorbar)))))
    return dict(data=data, layout=layout)


def utilization_figure(panels: list[tuple[str, pd.DataFrame, dict]]) -> dict:
    """Per-instance busy fraction over time, one heatmap per (label, utilization frame, instance -> type)."""
    prepared, zmax = [], 1.0
    for label, util, types in panels:
        order = sorted(util.index, key=lambda iid: (str(types.get(iid) or ""), iid))
        util = util.loc[order]
        edges = util.columns.to_numpy(float)
        width = edges[1] - edges[0] if edges.size > 1 else 1.0
        x = np.round(edges - edges[0] + width / 2, 3)
        y = [escape(f"{iid} ({types[iid]})" if types.get(iid) else str(iid)) for iid in order]
        finite = _finite(util.to_numpy(float))
        zmax = max(zmax, float(finite.max()) if finite.size else 0.0)
        prepared.append((label, util, x, y, None))
    return _stacked_heatmaps(prepared, "Instance utilization over time (busy fraction per time bin; "
                                       "above 1 = concurrent queries)",
                             "seconds since the step's first dispatch", "busy", zmax, 16,
                             "%{y}<br>t = %{x:.1f} s<br>busy %{z:.2f}<extra></extra>")


def batch_figure(panels: list[tuple[str, pd.DataFrame]]) -> dict:
    """Where each dispatcher sent which batch sizes: share of its dispatched queries per type x batch bucket."""
    prepared = []
    for label, counts in panels:
        total = max(1, int(counts.to_numpy().sum()))
        share = counts / total
        prepared.append((label, share, list(counts.columns), [escape(str(t)) for t in counts.index],
                         counts.to_numpy().astype(str)))
    return _stacked_heatmaps(prepared, "Batch size x instance type: share of each dispatcher's dispatched queries "
                                       "(cell text: counts)", "batch size", "share",
                             max([float(p[1].to_numpy().max()) for p in prepared if p[1].size] + [0.01]), 26,
                             "%{y}, batch %{x}<br>%{text} queries (%{z:.1%})<extra></extra>")


# ---------------------------------------------------------------- HTML


def _json_for_script(obj) -> str:
    """JSON safe inside a <script> element: no NaN/Infinity (null instead), no '<', '>' or '&' characters."""
    text = json.dumps(_plain(obj), allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain(obj):
    """Python/numpy values as JSON-able builtins, non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def _cell(cell) -> str:
    """A <td> from escaped HTML, or from (css class, escaped HTML)."""
    return f'<td class="{cell[0]}">{cell[1]}</td>' if isinstance(cell, tuple) else f"<td>{cell}</td>"


def _table(header: list[str], rows: list[list], cls: str = "", row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are given already escaped (optionally as (css class, html) pairs)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join((f'<tr class="{row_classes[i]}">' if row_classes else "<tr>")
                   + "".join(_cell(c) for c in row) + "</tr>" for i, row in enumerate(rows))
    # Wrapped so that a wide table scrolls by itself instead of widening the page.
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _kv_table(items: dict, cls: str = "kv") -> str:
    """A two-column key/value table (nested values as compact JSON)."""
    rows = []
    for key, value in items.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(_plain(value), ensure_ascii=False)
        else:
            text = _fmt(value, 3) if isinstance(value, float) else str(value)
        rows.append([escape(str(key)), escape(text)])
    return _table(["", ""], rows, cls)


def dispatcher_table(summary: pd.DataFrame, run_cost_per_h: float | None) -> str:
    """Per dispatcher: allowable QPS, bracket, p99 at allowable, cost, QPS per $/h (and simulated allowable)."""
    has_sim = "sim_allowable_qps" in summary
    header = ["dispatcher", "allowable qps", "bracket qps", "p99 at allowable (ms)", "p99 95% CI (ms)",
              "violations", "cost $/h", "qps per $/h", "steps (valid)"]
    if has_sim:
        header.insert(2, "simulated allowable qps")
    rows = []
    for d, steps in summary.groupby("dispatcher", sort=False):
        step = shown_step(steps)
        allowable = _finite(steps["allowable_qps"])
        allow = float(allowable[0]) if allowable.size else math.nan
        lo, hi = bracket(steps)
        cost = float(step["cost_per_h"]) if step is not None and math.isfinite(step["cost_per_h"]) else (
            float(run_cost_per_h) if run_cost_per_h is not None else math.nan)
        per_dollar = float(step["qps_per_dollar"]) if step is not None else math.nan
        if not math.isfinite(per_dollar) and math.isfinite(allow) and cost > 0:
            per_dollar = allow / cost
        row = [escape(d), _fmt(allow), f"[{_fmt(lo)}, {_fmt(hi)}]",
               _fmt(step["p99_ms"]) if step is not None else "–",
               f"[{_fmt(step['p99_ci_low_ms'])}, {_fmt(step['p99_ci_high_ms'])}]" if step is not None else "–",
               _fmt(100 * step["violation_rate"], 2, " %") if step is not None else "–",
               _fmt(cost, 3), _fmt(per_dollar, 2), f"{len(steps)} ({int(steps['valid'].sum())})"]
        if has_sim:
            sim = _finite(steps["sim_allowable_qps"])
            row.insert(2, _fmt(float(sim[0])) if sim.size else "–")
        rows.append(row)
    return _table(header, rows, "num")


def steps_table(summary: pd.DataFrame) -> str:
    """Every dispatcher x rate step, in run order."""
    cols = [("dispatcher", "dispatcher", None), ("phase", "phase", 0), ("offered_qps", "offered qps", 1),
            ("achieved_qps", "achieved qps", 1), ("queries", "queries", 0), ("p50_ms", "p50 ms", 1),
            ("p90_ms", "p90 ms", 1), ("p95_ms", "p95 ms", 1), ("p99_ms", "p99 ms", 1),
            ("p99_ci", "p99 95% CI ms", 1), ("p999_ms", "p99.9 ms", 1), ("violation_rate", "violations %", 2),
            ("valid", "verdict", None), ("sim_p99_ms", "sim p99 ms", 1), ("sim_valid", "sim verdict", None),
            ("send_lag_p99_ms", "send lag p99 ms", 1), ("loadgen_cpu_percent", "loadgen CPU %", 0),
            ("cost_per_h", "$/h", 3), ("qps_per_dollar", "qps per $/h", 2)]
    cols = [c for c in cols if c[0] in summary or c[0] == "p99_ci"]
    rows, classes = [], []
    for _, r in summary.iterrows():
        cells = []
        for key, _, digits in cols:
            if key == "p99_ci":
                cells.append(f"[{_fmt(r['p99_ci_low_ms'])}, {_fmt(r['p99_ci_high_ms'])}]")
            elif key == "valid":
                cells.append(("reason", "VALID" if r["valid"] else "INVALID" + (
                    f": {escape(r['invalid_reason'])}" if r["invalid_reason"] else "")))
            elif key == "sim_valid":
                cells.append("–" if pd.isna(r[key]) else ("VALID" if bool(r[key]) else "INVALID"))
            elif key == "violation_rate":
                cells.append(_fmt(100 * float(r[key]), 2))
            elif digits is None:
                cells.append(escape(str(r[key])))
            elif digits == 0:
                v = pd.to_numeric(r[key], errors="coerce")
                cells.append("–" if pd.isna(v) else _fmt(int(round(v))) if math.isfinite(v) else _fmt(float(v)))
            else:
                cells.append(_fmt(float(r[key]), digits))
        rows.append(cells)
        classes.append("valid" if r["valid"] else "invalid")
    return _table([escape(c[1]) for c in cols], rows, "num", classes)


def config_section(meta: dict) -> str:
    """The run's identity, configuration, pool, package versions and machine, as tables."""
    known = ("run_id", "kind", "started_at", "finished_at", "partial", "model", "qos_ms", "pool_config",
             "cost_per_h")
    top = {k: meta[k] for k in known if k in meta}
    trace = meta.get("trace")
    if isinstance(trace, dict):
        top.update({f"trace {k}": v for k, v in trace.items()})
    elif trace is not None:
        top["trace"] = trace
    structured = ("trace", "config", "pool", "versions", "machine")
    top.update({k: v for k, v in meta.items() if k not in known and k not in structured})
    parts = ["<h3>Run</h3>", _kv_table(top)]
    if isinstance(meta.get("config"), dict) and meta["config"]:
        parts += ["<h3>Configuration</h3>", _kv_table(meta["config"])]
    pool = meta.get("pool")
    if isinstance(pool, list) and pool:
        keys = list(dict.fromkeys(k for p in pool if isinstance(p, dict) for k in p))
        rows = [[escape(_fmt(p.get(k), 3) if isinstance(p.get(k), float) else str(p.get(k, "")))
                 for k in keys] for p in pool if isinstance(p, dict)]
        parts += ["<h3>Pool</h3>", _table([escape(k) for k in keys], rows)]
    for key, title in (("versions", "Package versions"), ("machine", "Machine")):
        if isinstance(meta.get(key), dict) and meta[key]:
            parts += [f"<h3>{title}</h3>", _kv_table(meta[key])]
        elif meta.get(key) is not None:
            parts += [f"<h3>{title}</h3>", f"<p>{escape(str(meta[key]))}</p>"]
    return "\n".join(parts)


def _allocation_section(run: RunData) -> str:
    """The allocation table when allocation.parquet exists and harness.report.allocation provides allocation_html."""
    if run.allocation is None:
        return ""
    try:
        from harness.report.allocation import allocation_html
    except ImportError:
        return ""
    try:
        return allocation_html(run.allocation)
    except Exception as exc:  # a report with every other section beats no report
        return (f'<section><h2>Configuration allocation</h2><p class="note">allocation.parquet could not be '
                f"shown: {escape(type(exc).__name__)}: {escape(str(exc))}</p></section>")


_STYLE = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:0} .note{color:#666;font-size:.92em}
.banner{background:#fff3cd;border:1px solid #e0b000;padding:.6em 1em;font-weight:bold;margin:1em 0}
#report-errors{background:#fdd;border:1px solid #c00;padding:.5em;white-space:pre-wrap}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
table.num td{text-align:right;white-space:nowrap} table.num td:first-child{text-align:left}
table.num td.reason{white-space:normal;text-align:left;min-width:12em}
tr.invalid td{color:#777} table.kv td:first-child{font-weight:bold}
.chart{width:100%;min-height:300px} .scroll{overflow-x:auto;max-width:100%}
"""

# Runs before plotly.js so that errors while loading it are caught too; the browser test reads #report-errors.
_ERROR_SCRIPT = """
window.__reportErrors = [];
function __showErrors() {
  var el = document.getElementById('report-errors');
  if (el && window.__reportErrors.length) { el.textContent = window.__reportErrors.join('\\n'); el.hidden = false; }
}
function __reportError(msg) { window.__reportErrors.push(String(msg)); __showErrors(); }
window.onerror = function (msg, src, line) { __reportError(msg + ' (' + (src || '') + ':' + line + ')'); };
window.addEventListener('unhandledrejection', function (e) {
  __reportError('unhandled rejection: ' + ((e.reason && e.reason.message) || e.reason));
});
(function () {
  var original = console.error;
  console.error = function () {
    __reportError('console.error: ' + Array.prototype.slice.call(arguments).join(' '));
    return original.apply(console, arguments);
  };
})();
// Errors raised before the errors element existed (e.g. while plotly.js loaded) are shown once it does.
document.addEventListener('DOMContentLoaded', __showErrors);
"""

_RENDER_SCRIPT = """
(function () {
  var charts = JSON.parse(document.getElementById('report-chart-data').textContent);
  var done = 0;
  document.body.dataset.chartsExpected = charts.length;
  document.body.dataset.chartsRendered = 0;
  if (typeof Plotly === 'undefined') { __reportError('plotly.js did not load'); return; }
  charts.forEach(function (chart) {
    try {
      Plotly.newPlot(chart.id, chart.data, chart.layout, {responsive: true, displaylogo: false})
        .then(function () { done += 1; document.body.dataset.chartsRendered = done; },
              function (err) { __reportError(chart.id + ': ' + err); });
    } catch (err) { __reportError(chart.id + ': ' + err); }
  });
})();
"""

_EXPLANATION = {
    "mlperf": """
<p>A rate step is <b>VALID</b> as in MLPerf LoadGen's Server scenario: after a warm-up it has enough queries over a
long enough span, and it passes early stopping, i.e. with 99% confidence the true p99 latency is within the QoS
target (with n queries and t of them over QoS, P[Binomial(n, 0.01) &le; t] &le; 0.01). Dropped, shed or failed
queries count as infinitely slow. A dispatcher's <b>allowable throughput</b> is the highest offered load (queries/s)
found VALID by the rate search; the bracket is that passing rate and the lowest failing rate above it.</p>
""",
    "p99": """
<p>A rate step is <b>VALID</b> when, after a warm-up, it has enough queries over a long enough span and its measured
p99 latency is within the QoS target (the Kairos paper's criterion; this run's phases are too short for MLPerf's
early stopping at 99% confidence, whose verdict is still listed per step). Dropped, shed or failed queries count as
infinitely slow. A dispatcher's <b>allowable throughput</b> is the highest offered load (queries/s) found VALID by
the rate search; the bracket is that passing rate and the lowest failing rate above it.</p>
""",
}


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def _chart_div(chart_id: str) -> str:
    return f'<div id="{chart_id}" class="chart" data-chart="{chart_id}"></div>'


def render_report(run: RunData, plotly_js: str | None = None) -> str:
    """The whole page as one string (plotly.js inlined once; every chart drawn client-side from inline JSON)."""
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    meta, summary, queries = run.meta, run.summary, run.queries
    qos = meta.get("qos_ms")
    qos_ms = float(qos) if isinstance(qos, (int, float)) and math.isfinite(qos) and qos > 0 else None
    dispatchers = list(dict.fromkeys(summary["dispatcher"]))
    colors = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(dispatchers)}
    charts: list[dict] = []
    body: list[str] = []

    charts.append(dict(id=CHART_P99, **p99_figure(summary, qos_ms, colors)))
    body.append(_section("Tail latency vs offered load",
                         '<p class="note">One line per dispatcher; filled markers are VALID steps, hollow ones '
                         "INVALID, with the p99's 95% confidence interval. Dashed lines: the simulator's prediction "
                         "on the same trace, where present.</p>" + _chart_div(CHART_P99), "p99"))

    # The step shown per dispatcher in the distribution charts: its allowable rate, else its highest VALID rate.
    shown = []
    if queries is not None:
        for d in dispatchers:
            sel, label = step_queries(queries, d, shown_step(summary[summary["dispatcher"] == d]))
            if len(sel):
                shown.append((d, sel, label))
    missing = ('<p class="note">No queries.parquet in this run directory: per-query charts are not '
               "available.</p>")

    if shown:
        curves = []
        for d, sel, label in shown:
            lat = sel["latency_ms"].to_numpy(float)
            x, y = cdf_points(lat)
            curves.append((label, colors[d], x, y, float(np.mean(~np.isfinite(lat))) if lat.size else 0.0))
        charts.append(dict(id=CHART_CDF, **cdf_figure(curves, qos_ms)))
        body.append(_section("Latency distribution", _chart_div(CHART_CDF), "cdf"))
    else:
        body.append(_section("Latency distribution", missing, "cdf"))

    util_cols = queries is not None and {"start_s", "finish_s", "instance_id"} <= set(queries.columns)
    util_panels = []
    if shown and util_cols:
        types = _instance_types(queries, meta)
        for d, sel, label in shown:
            util = utilization(sel, UTIL_BINS)
            if not util.empty:
                util_panels.append((label, util, types))
    if util_panels:
        charts.append(dict(id=CHART_UTIL, **utilization_figure(util_panels)))
        body.append(_section("Instance utilization", _chart_div(CHART_UTIL), "utilization"))
    else:
        body.append(_section("Instance utilization", missing if queries is None else
                             '<p class="note">No served queries with start/finish times and instances.</p>',
                             "utilization"))

    batch_panels = []
    if shown and "batch_size" in queries:
        for d, sel, label in shown:
            counts = batch_heatmap(sel)
            if counts.size and counts.to_numpy().sum() > 0:
                batch_panels.append((label, counts))
    if batch_panels:
        charts.append(dict(id=CHART_BATCH, **batch_figure(batch_panels)))
        body.append(_section("Batch placement", _chart_div(CHART_BATCH), "placement"))
    else:
        body.append(_section("Batch placement", missing if queries is None else
                             '<p class="note">No dispatched queries with batch sizes.</p>', "placement"))

    run_cost = meta.get("cost_per_h") if isinstance(meta.get("cost_per_h"), (int, float)) else None
    body.append(_section("Results per dispatcher", dispatcher_table(summary, run_cost)
                         + "<h3>Every rate step</h3>" + steps_table(summary), "tables"))
    allocation = _allocation_section(run)
    if allocation:
        body.append(allocation)
    body.append(_section("Run", config_section(meta), "run"))

    run_id = str(meta.get("run_id") or run.run_dir.name)
    title = f"kairos report: {run_id}"
    facts = [str(meta[k]) for k in ("kind", "model") if meta.get(k)]
    if qos_ms:
        facts.append(f"QoS p99 ≤ {qos_ms:g} ms")
    if meta.get("pool_config"):
        facts.append(str(meta["pool_config"]))
    if run_cost is not None:
        facts.append(f"${run_cost:.3f}/h")
    if meta.get("started_at"):
        facts.append(f"started {meta['started_at']}")
    banner = f'<div class="banner" id="partial-banner">{escape(PARTIAL_BANNER)}</div>' if meta.get("partial") else ""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in run.notes)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_ERROR_SCRIPT}</script>",
        f"<script>{plotly_js}</script>",
        "</head>",
        f'<body data-charts-expected="{len(charts)}">',
        '<pre id="report-errors" hidden></pre>',
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(" · ".join(facts))}</p></header>',
        banner,
        notes,
        _EXPLANATION.get(str((meta.get("config") or {}).get("criterion", "mlperf")), _EXPLANATION["mlperf"]),
        *body,
        f'<script type="application/json" id="report-chart-data">{_json_for_script(charts)}</script>',
        f"<script>{_RENDER_SCRIPT}</script>",
        "</body></html>",
        "",
    ])


def _instance_types(queries: pd.DataFrame, meta: dict) -> dict[str, str]:
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


# ---------------------------------------------------------------- I/O


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt or non-parquet file
        raise InputError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None


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
    qos = meta.get("qos_ms") if isinstance(meta.get("qos_ms"), (int, float)) else None
    summary = normalize_summary(_read_parquet(summary_path), str(summary_path), qos)
    queries = None
    queries_path = run_dir / "queries.parquet"
    if queries_path.is_file():
        pool = meta.get("pool") if isinstance(meta.get("pool"), list) else None
        queries = normalize_queries(_read_parquet(queries_path), str(queries_path), pool)
    allocation, notes = None, []
    allocation_path = run_dir / "allocation.parquet"
    if allocation_path.is_file():
        try:
            allocation = pd.read_parquet(allocation_path)
        except Exception as exc:  # optional section: say so, keep the rest of the report
            notes.append(f"{allocation_path}: not shown ({type(exc).__name__}: {exc})")
    return RunData(run_dir, meta, summary, queries, allocation, tuple(notes))


def build_report(run_dir: Path, *, out: Path | None = None) -> Path:
    """Write the self-contained HTML report of ``run_dir`` (default ``run_dir/report.html``); returns its path."""
    run = load_run(Path(run_dir))
    out = Path(out) if out is not None else run.run_dir / "report.html"
    html = render_report(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
