"""The report's charts as plotly figure dicts (data + layout), drawn client-side by the page."""

from __future__ import annotations

import math
from html import escape

import numpy as np
import pandas as pd
from plotly.subplots import make_subplots

from harness.report.data import finite_values

# Tableau 10: distinguishable, colour-blind tolerable; a dispatcher keeps its colour across charts.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def dispatcher_colors(dispatchers) -> dict[str, str]:
    """A colour per dispatcher, in order, from PALETTE (cycling past ten)."""
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(dispatchers)}


def fmt(value, digits: int = 1, unit: str = "") -> str:
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
    layout = dict(
        template="none",
        title=dict(text=title, x=0.01),
        margin=dict(l=70, r=30, t=60, b=60),
        hovermode="closest",
        legend=dict(orientation="v"),
        font=dict(family="sans-serif", size=12),
        plot_bgcolor="white",
        paper_bgcolor="white",
    )
    layout.update(extra)
    return layout


def _axis(title: str, **extra) -> dict:
    return dict(
        title=dict(text=title),
        showgrid=True,
        gridcolor="#e5e5e5",
        zeroline=False,
        showline=True,
        linecolor="#888",
        **extra,
    )


def hline(y: float, color: str = "#c00", width: float = 1.5) -> dict:
    """A dashed horizontal line across the plot at ``y`` (the QoS target)."""
    return dict(
        type="line", xref="paper", yref="y", x0=0, x1=1, y0=y, y1=y, line=dict(color=color, width=width, dash="dash")
    )


def p99_figure(summary: pd.DataFrame, qos_ms: float | None, colors: dict[str, str]) -> dict:
    """p99 versus offered load per dispatcher: VALID filled, INVALID hollow, QoS and allowable markers, sim dashed."""
    data, shapes, annotations = [], [], []
    finite = finite_values(summary["p99_ms"])
    top = max([*finite, qos_ms or 0.0, 1.0]) * 2.0  # where infinite p99 (dropped queries) is drawn
    has_sim = "sim_p99_ms" in summary and np.isfinite(summary["sim_p99_ms"].to_numpy(float)).any()
    for d, steps in summary.groupby("dispatcher", sort=False):
        steps = steps.sort_values("offered_qps")
        color = colors[d]
        p99 = steps["p99_ms"].to_numpy(float)
        valid = steps["valid"].to_numpy(bool)
        inf = np.isinf(p99)
        symbols = np.where(inf, "triangle-up-open", np.where(valid, "circle", "circle-open"))
        hover = [
            f"{escape(d)}<br>offered {fmt(x)} qps<br>p99 {fmt(y)} ms<br>" + ("VALID" if v else f"INVALID {escape(r)}")
            for x, y, v, r in zip(steps["offered_qps"], p99, valid, steps["invalid_reason"])
        ]
        lo, hi = steps["p99_ci_low_ms"].to_numpy(float), steps["p99_ci_high_ms"].to_numpy(float)
        ok_ci = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(p99)
        up, down = np.full(p99.shape, np.nan), np.full(p99.shape, np.nan)
        up[ok_ci], down[ok_ci] = hi[ok_ci] - p99[ok_ci], p99[ok_ci] - lo[ok_ci]
        data.append(
            dict(
                type="scatter",
                mode="lines+markers",
                name=escape(d),
                legendgroup=d,
                x=steps["offered_qps"].to_numpy(float),
                y=np.where(inf, top, p99),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
                line=dict(color=color, width=2),
                marker=dict(color=color, size=10, symbol=symbols, line=dict(color=color, width=2)),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    visible=bool(ok_ci.any()),
                    color=color,
                    thickness=1,
                    width=3,
                    array=up,
                    arrayminus=down,
                ),
            )
        )
        if has_sim:
            sim = steps["sim_p99_ms"].to_numpy(float)
            data.append(
                dict(
                    type="scatter",
                    mode="lines",
                    name=f"{escape(d)} (simulated)",
                    legendgroup=d,
                    x=steps["offered_qps"].to_numpy(float),
                    y=np.where(np.isinf(sim), top, sim),
                    line=dict(color=color, width=1.5, dash="dash"),
                    hovertemplate=f"{escape(d)} simulated<br>%{{x:.1f}} qps: p99 %{{y:.1f}} ms<extra></extra>",
                )
            )
        allowable = finite_values(steps["allowable_qps"])
        if allowable.size:
            shapes.append(
                dict(
                    type="line",
                    xref="x",
                    yref="paper",
                    x0=allowable[0],
                    x1=allowable[0],
                    y0=0,
                    y1=1,
                    line=dict(color=color, width=1.5, dash="dot"),
                )
            )
            annotations.append(
                dict(
                    x=allowable[0],
                    y=1.0,
                    xref="x",
                    yref="paper",
                    yanchor="bottom",
                    text=f"{escape(d)}: {allowable[0]:.1f}",
                    showarrow=False,
                    font=dict(color=color, size=11),
                    textangle=-30,
                )
            )
    # Legend-only entries explaining the marker fill.
    for name, symbol in (
        ("VALID (filled)", "circle"),
        ("INVALID (hollow)", "circle-open"),
        ("p99 = ∞ (dropped)", "triangle-up-open"),
    ):
        data.append(
            dict(
                type="scatter",
                mode="markers",
                name=name,
                x=[None],
                y=[None],
                hoverinfo="skip",
                marker=dict(color="#555", size=10, symbol=symbol, line=dict(color="#555", width=2)),
            )
        )
    if qos_ms:
        shapes.append(hline(qos_ms))
        annotations.append(
            dict(
                x=0,
                y=qos_ms,
                xref="paper",
                yref="y",
                xanchor="left",
                yanchor="bottom",
                text=f"QoS p99 ≤ {qos_ms:g} ms",
                showarrow=False,
                font=dict(color="#c00"),
            )
        )
    positive = finite[finite > 0]
    log_y = positive.size > 1 and positive.max() / positive.min() > 20
    return dict(
        data=data,
        layout=_base_layout(
            "p99 latency vs offered load (dotted verticals: allowable throughput)",
            xaxis=_axis("offered load (queries/s)"),
            yaxis=_axis("p99 latency (ms)" + (", log scale" if log_y else ""), type="log" if log_y else "linear"),
            shapes=shapes,
            annotations=annotations,
            height=480,
            margin=dict(l=70, r=30, t=90, b=60),
        ),
    )


def cdf_figure(curves: list[tuple[str, str, np.ndarray, np.ndarray, float]], qos_ms: float | None) -> dict:
    """Latency CDFs, one line per (label, colour, x, y, share dropped), log-x, with the QoS line."""
    data = []
    for label, color, x, y, dropped in curves:
        name = label + (f" ({100 * dropped:.2f}% not served)" if dropped > 0 else "")
        data.append(
            dict(
                type="scatter",
                mode="lines",
                name=escape(name),
                x=np.round(x, 3),
                y=np.round(y, 6),
                line=dict(color=color, width=2, shape="hv"),
                hovertemplate=f"{escape(label)}<br>%{{x:.1f}} ms: %{{y:.4f}}<extra></extra>",
            )
        )
    shapes = [
        dict(
            type="line",
            xref="paper",
            yref="y",
            x0=0,
            x1=1,
            y0=0.99,
            y1=0.99,
            line=dict(color="#888", width=1, dash="dot"),
        )
    ]
    annotations = [
        dict(
            x=0,
            y=0.99,
            xref="paper",
            yref="y",
            xanchor="left",
            yanchor="top",
            text="p99",
            showarrow=False,
            font=dict(color="#888"),
        )
    ]
    if qos_ms:
        shapes.append(
            dict(
                type="line",
                xref="x",
                yref="paper",
                x0=qos_ms,
                x1=qos_ms,
                y0=0,
                y1=1,
                line=dict(color="#c00", width=1.5, dash="dash"),
            )
        )
        annotations.append(
            dict(
                x=math.log10(qos_ms),
                y=0.02,
                xref="x",
                yref="paper",
                xanchor="left",
                text=f" QoS {qos_ms:g} ms",
                showarrow=False,
                font=dict(color="#c00"),
            )
        )
    return dict(
        data=data,
        layout=_base_layout(
            "Latency CDF per dispatcher (at its allowable rate, else its highest VALID rate)",
            xaxis=_axis("latency (ms), log scale", type="log"),
            yaxis=_axis("fraction of queries", range=[0, 1.02]),
            shapes=shapes,
            annotations=annotations,
            height=460,
        ),
    )


def _stacked_heatmaps(
    panels: list[tuple[str, pd.DataFrame, list, list, np.ndarray | None]],
    title: str,
    x_title: str,
    colorbar: str,
    zmax: float,
    row_px: int,
    hover: str,
) -> dict:
    """Heatmaps stacked vertically (one per panel: label, z frame, x, y labels, text) sharing one colour scale."""
    # Sized in pixels so that a panel's tick labels never run into the next panel's title.
    heights = [max(2, len(p[3])) * row_px for p in panels]
    gap_px = 70
    total = sum(heights) + gap_px * (len(panels) - 1)
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        subplot_titles=[escape(p[0]) for p in panels],
        row_heights=[h / sum(heights) for h in heights],
        vertical_spacing=gap_px / total if len(panels) > 1 else 0.0,
    )
    layout = fig.to_plotly_json()["layout"]
    data = []
    for i, (_, z, x, y, text) in enumerate(panels, start=1):
        trace = dict(
            type="heatmap",
            z=np.round(z.to_numpy(float), 4),
            x=x,
            y=y,
            coloraxis="coloraxis",
            xaxis=f"x{i if i > 1 else ''}",
            yaxis=f"y{i if i > 1 else ''}",
            hovertemplate=hover,
            xgap=1,
            ygap=1,
        )
        if text is not None:
            trace.update(text=text, texttemplate="%{text}", textfont=dict(size=10))
        data.append(trace)
        layout[f"xaxis{i if i > 1 else ''}"].update(showgrid=False)
        if i == len(panels):
            layout[f"xaxis{i if i > 1 else ''}"].update(title=dict(text=x_title))
        layout[f"yaxis{i if i > 1 else ''}"].update(type="category", automargin=True)
    layout.update(
        _base_layout(
            title,
            height=total + 150,
            margin=dict(l=140, r=30, t=90, b=60),
            coloraxis=dict(cmin=0, cmax=zmax, colorscale="Viridis", colorbar=dict(title=dict(text=colorbar))),
        )
    )
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
        finite = finite_values(util.to_numpy(float))
        zmax = max(zmax, float(finite.max()) if finite.size else 0.0)
        prepared.append((label, util, x, y, None))
    return _stacked_heatmaps(
        prepared,
        "Instance utilization over time (busy fraction per time bin; above 1 = concurrent queries)",
        "seconds since the step's first dispatch",
        "busy",
        zmax,
        16,
        "%{y}<br>t = %{x:.1f} s<br>busy %{z:.2f}<extra></extra>",
    )


def batch_figure(panels: list[tuple[str, pd.DataFrame]]) -> dict:
    """Where each dispatcher sent which batch sizes: share of its dispatched queries per type x batch bucket."""
    prepared = []
    for label, counts in panels:
        total = max(1, int(counts.to_numpy().sum()))
        share = counts / total
        prepared.append(
            (label, share, list(counts.columns), [escape(str(t)) for t in counts.index], counts.to_numpy().astype(str))
        )
    return _stacked_heatmaps(
        prepared,
        "Batch size x instance type: share of each dispatcher's dispatched queries (cell text: counts)",
        "batch size",
        "share",
        max([float(p[1].to_numpy().max()) for p in prepared if p[1].size] + [0.01]),
        26,
        "%{y}, batch %{x}<br>%{text} queries (%{z:.1%})<extra></extra>",
    )


def fault_figure(
    timelines: list[tuple[str, str, pd.DataFrame]], marks: list[tuple[float, float, str]], qos_ms: float | None
) -> dict:
    """p99 per second (lines) and queries not served (bars) against time since the chaos schedule started, one
    colour per dispatcher; each fault a shaded window (or a line) labelled with what it did."""
    data = []
    for label, color, tl in timelines:
        p99 = tl["p99_ms"].to_numpy(float)
        data.append(
            dict(
                type="scatter",
                mode="lines+markers",
                name=escape(f"{label}: p99 per second"),
                x=tl["t_s"].round(2).tolist(),
                y=[round(v, 2) if math.isfinite(v) else None for v in p99],
                line=dict(color=color, width=1.5),
                marker=dict(size=4),
                hovertemplate=f"{escape(label)}<br>+%{{x:.0f}} s: p99 %{{y:.1f}} ms<extra></extra>",
            )
        )
        data.append(
            dict(
                type="bar",
                name=escape(f"{label}: not served"),
                x=tl["t_s"].round(2).tolist(),
                y=tl["not_served"].astype(int).tolist(),
                yaxis="y2",
                marker=dict(color=color, opacity=0.35),
                hovertemplate=f"{escape(label)}<br>+%{{x:.0f}} s: %{{y}} not served<extra></extra>",
            )
        )
    shapes, annotations = [], []
    for k, (start, end, text) in enumerate(marks):
        shapes.append(
            dict(
                type="rect" if end > start else "line",
                xref="x",
                yref="paper",
                x0=start,
                x1=max(end, start),
                y0=0,
                y1=1,
                line=dict(color="#c00", width=1, dash="dot"),
                fillcolor="rgba(204,0,0,0.08)",
            )
        )
        annotations.append(
            dict(
                x=start,
                y=1 - 0.06 * (k % 5),
                xref="x",
                yref="paper",
                xanchor="left",
                yanchor="top",
                text=escape(text),
                showarrow=False,
                font=dict(color="#c00", size=11),
            )
        )
    if qos_ms:
        shapes.append(hline(qos_ms, color="#888", width=1))
    return dict(
        data=data,
        layout=_base_layout(
            "Faults: p99 per second and queries not served, from each dispatcher's first phase",
            xaxis=_axis("seconds since the schedule started"),
            yaxis=_axis("p99 latency (ms), log scale", type="log"),
            yaxis2=dict(
                title=dict(text="not served"), overlaying="y", side="right", showgrid=False, rangemode="tozero"
            ),
            shapes=shapes,
            annotations=annotations,
            barmode="group",
            height=460,
        ),
    )
