"""``kairos report``: one self-contained HTML page (interactive charts and tables) from a run directory.

The page inlines plotly.js once, its stylesheet and scripts (``assets/``), and draws every chart client-side from
inline JSON, so it opens offline. ``data`` reads and shapes the run, ``figures`` builds the plotly dicts; here are the
tables, the sections, ``render_report`` (the page) and ``build_report`` (I/O).
"""

from __future__ import annotations

import math
from html import escape
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs

from harness.core.jsonable import dumps
from harness.report.allocation import allocation_html
from harness.report.data import (
    UTIL_BINS,
    RunData,
    batch_heatmap,
    bracket,
    cdf_points,
    fault_timeline,
    finite_values,
    instance_types,
    load_run,
    shown_step,
    step_queries,
    utilization,
)
from harness.report.figures import (
    batch_figure,
    cdf_figure,
    dispatcher_colors,
    fault_figure,
    fmt,
    p99_figure,
    utilization_figure,
)

CHART_P99 = "chart-p99-vs-load"
CHART_CDF = "chart-latency-cdf"
CHART_UTIL = "chart-utilization"
CHART_BATCH = "chart-batch-placement"
CHART_FAULTS = "chart-faults"
CHART_IDS = (
    CHART_P99,
    CHART_CDF,
    CHART_UTIL,
    CHART_BATCH,
)  # every report has these; CHART_FAULTS when faults were injected

PARTIAL_BANNER = "partial run: interrupted; numbers cover completed phases only"

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


def _asset(name: str) -> str:
    """The text of ``assets/NAME``, inlined into the page."""
    return (files("harness.report") / "assets" / name).read_text(encoding="utf-8")


def _json_for_script(obj) -> str:
    """JSON safe inside a <script> element: no NaN/Infinity (null instead), no '<', '>' or '&' characters."""
    text = dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _cell(cell) -> str:
    """A <td> from escaped HTML, or from (css class, escaped HTML)."""
    return f'<td class="{cell[0]}">{cell[1]}</td>' if isinstance(cell, tuple) else f"<td>{cell}</td>"


def _table(header: list[str], rows: list[list], cls: str = "", row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are given already escaped (optionally as (css class, html) pairs)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        (f'<tr class="{row_classes[i]}">' if row_classes else "<tr>") + "".join(_cell(c) for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    # Wrapped so that a wide table scrolls by itself instead of widening the page.
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _kv_table(items: dict, cls: str = "kv") -> str:
    """A two-column key/value table (nested values as compact JSON)."""
    rows = []
    for key, value in items.items():
        if isinstance(value, (dict, list)):
            text = dumps(value, ensure_ascii=False)
        else:
            text = fmt(value, 3) if isinstance(value, float) else str(value)
        rows.append([escape(str(key)), escape(text)])
    return _table(["", ""], rows, cls)


def crossing_cell(steps: pd.DataFrame) -> str:
    """The crossing estimate of a dispatcher's interval (``≥``/``≤`` past the rates tried; ``?`` where unknown or
    from a run written before it was recorded)."""
    estimate = finite_values(steps["allowable_estimate_qps"]) if "allowable_estimate_qps" in steps else np.array([])
    if not estimate.size:
        return "?"
    censored = "allowable_estimate_censored" in steps and bool(steps["allowable_estimate_censored"].fillna(False).any())
    mark = (edge_mark(steps, float(estimate[0])) or "≥") if censored else ""
    return f"{mark}{fmt(float(estimate[0]))}"


def edge_mark(steps: pd.DataFrame, value: float) -> str:
    """``≥`` for a censored value at the highest rate tried (it may lie above), ``≤`` at the lowest, else ''."""
    if value >= steps["offered_qps"].max():
        return "≥"
    return "≤" if value <= steps["offered_qps"].min() else ""


def censored_mark(steps: pd.DataFrame, side: str, mark: str) -> str:
    """For a bound (``side``: "low"/"high") censored at the edge of the rates tried, ``≥`` at the highest rate, ``≤`` at
    the lowest, else ``mark``; '' when not censored. Runs written before the side was recorded carry one flag: there
    the bound that sits at that edge is the one."""
    column = f"allowable_{side}_censored"
    if column in steps:
        if not bool(steps[column].fillna(False).any()):
            return ""
        bound = finite_values(steps[f"allowable_{side}_qps"])
        return (edge_mark(steps, float(bound[0])) if bound.size else "") or mark
    if not bool(steps.get("allowable_interval_censored", pd.Series([False])).fillna(False).any()):
        return ""
    bound = finite_values(steps[f"allowable_{side}_qps"])
    edge = steps["offered_qps"].min() if side == "low" else steps["offered_qps"].max()
    return mark if bound.size and math.isclose(float(bound[0]), float(edge)) else ""


def dispatcher_table(summary: pd.DataFrame, run_cost_per_h: float | None) -> str:
    """Per dispatcher: allowable QPS, bracket, p99 at allowable, cost, QPS per $/h (and simulated allowable)."""
    has_sim = "sim_allowable_qps" in summary
    header = [
        "dispatcher",
        "allowable qps",
        "bracket qps",
        "p99 at allowable (ms)",
        "p99 95% CI (ms)",
        "violations",
        "cost $/h",
        "qps per $/h",
        "$ per million queries in QoS",
        "steps (valid)",
    ]
    if has_sim:
        header.insert(2, "simulated allowable qps")
    # Beside the pool's figure, the rate at which the harness itself (load generator, dispatcher) fell behind.
    # (Columns go in at 2 in the same order below for the header and each row.)
    has_sat = "harness_saturated_qps" in summary
    if has_sat:
        header.insert(2, "harness saturated at qps")
    has_iv = "allowable_low_qps" in summary
    if has_iv:
        # The interval is on where the share of misses crosses the limit, not on the figure (a rate tried): the
        # crossing estimate heads it, and the figure may lie below both.
        header.insert(2, "crossing qps [95% interval]")
    rows = []
    for d, steps in summary.groupby("dispatcher", sort=False):
        step = shown_step(steps)
        allowable = finite_values(steps["allowable_qps"])
        allow = float(allowable[0]) if allowable.size else math.nan
        lo, hi = bracket(steps)
        cost = (
            float(step["cost_per_h"])
            if step is not None and math.isfinite(step["cost_per_h"])
            else (float(run_cost_per_h) if run_cost_per_h is not None else math.nan)
        )
        per_dollar = float(step["qps_per_dollar"]) if step is not None else math.nan
        if not math.isfinite(per_dollar) and math.isfinite(allow) and cost > 0:
            per_dollar = allow / cost
        row = [
            escape(d),
            fmt(allow),
            f"[{fmt(lo)}, {fmt(hi)}]",
            fmt(step["p99_ms"]) if step is not None else "–",
            f"[{fmt(step['p99_ci_low_ms'])}, {fmt(step['p99_ci_high_ms'])}]" if step is not None else "–",
            fmt(100 * step["violation_rate"], 2, " %") if step is not None else "–",
            fmt(cost, 3),
            fmt(per_dollar, 2),
            # At the allowable load (where the shown step is), what each million queries served within QoS costs.
            fmt(float(step.get("usd_per_million_in_qos", math.nan)), 2) if step is not None else "–",
            f"{len(steps)} ({int(steps['valid'].sum())})",
        ]
        if has_sim:
            sim = finite_values(steps["sim_allowable_qps"])
            host = finite_values(steps.get("sim_allowable_host_adjusted_qps", pd.Series(dtype=float)))
            cell = fmt(float(sim[0])) if sim.size else "–"
            # Where the host served slower than the profile, what the simulator gives with its service times: how
            # much of the live/simulated gap the host explains.
            row.insert(2, cell + (f" ({fmt(float(host[0]))} with this host's service times)" if host.size else ""))
        if has_sat:
            sat = finite_values(steps["harness_saturated_qps"])
            row.insert(2, fmt(float(sat[0])) if sat.size else "not reached")
        if has_iv:
            low, high = finite_values(steps["allowable_low_qps"]), finite_values(steps["allowable_high_qps"])
            crossing = crossing_cell(steps)
            if low.size or high.size or crossing != "?":  # a missing bound (a phase too short to section): unknown
                marks = [censored_mark(steps, side, mark) for side, mark in (("low", "≤"), ("high", "≥"))]
                bounds = [f"{m}{fmt(float(b[0]))}" if b.size else "?" for b, m in zip((low, high), marks)]
                row.insert(2, f"{crossing} [{bounds[0]}, {bounds[1]}]")
            else:
                row.insert(2, "–")
        rows.append(row)
    note = ""
    if has_iv and "allowable_method" in summary:
        methods = sorted({str(m) for m in summary["allowable_method"].dropna()})
        note = (
            '<p class="note">Crossing: the rate at which the share of queries over the QoS reaches what the '
            "percentile allows (1% for p99), interpolated between the rates tried; the allowable figure is the "
            "highest rate tried that passed, so it can lie below the crossing and its interval. 95% interval on the "
            "crossing: "
            + escape("; ".join(methods))
            + ". ≤ and ≥ mark a bound at the edge of the rates tried (it may lie beyond).</p>"
        )
    return _table(header, rows, "num") + note


def steps_table(summary: pd.DataFrame) -> str:
    """Every dispatcher x rate step, in run order."""
    cols = [
        ("dispatcher", "dispatcher", None),
        ("phase", "phase", 0),
        ("offered_qps", "offered qps", 1),
        ("achieved_qps", "achieved qps", 1),
        ("queries", "queries", 0),
        ("p50_ms", "p50 ms", 1),
        ("p90_ms", "p90 ms", 1),
        ("p95_ms", "p95 ms", 1),
        ("p99_ms", "p99 ms", 1),
        ("p99_ci", "p99 95% CI ms", 1),
        ("p999_ms", "p99.9 ms", 1),
        ("violation_rate", "violations %", 2),
        ("valid", "verdict", None),
        ("faults", "faults", None),
        ("fidelity_ok", "self-checks", None),
        ("host_cpu_percent", "host CPU %", 0),
        ("outside_cpu_percent", "other processes' CPU %", 0),
        ("host_steal_percent", "steal %", 1),
        ("loop_lag_p99_ms", "dispatcher loop lag p99 ms", 1),
        ("service_excess", "service vs profile %", 1),
        ("sim_p99_ms", "sim p99 ms", 1),
        ("sim_p99_ci", "sim p99 95% CI ms", 1),
        ("p99_vs_sim", "live p99 vs sim", None),
        ("sim_valid", "sim verdict", None),
        ("send_lag_p99_ms", "send lag p99 ms", 1),
        ("loadgen_cpu_percent", "loadgen CPU %", 0),
        ("cost_per_h", "$/h", 3),
        ("qps_per_dollar", "qps per $/h", 2),
        ("usd_per_million_in_qos", "$ per M queries in QoS", 2),
    ]
    # the intervals are two columns each in summary.parquet, one cell here
    intervals = ("p99_ci", "sim_p99_ci")
    cols = [c for c in cols if c[0] in summary or (c[0] in intervals and f"{c[0]}_low_ms" in summary)]
    rows, classes = [], []
    for _, r in summary.iterrows():
        cells = []
        for key, _, digits in cols:
            if key in intervals:
                cells.append(f"[{fmt(r[f'{key}_low_ms'])}, {fmt(r[f'{key}_high_ms'])}]")
            elif key == "valid":
                cells.append(
                    (
                        "reason",
                        "VALID"
                        if r["valid"]
                        else "INVALID" + (f": {escape(r['invalid_reason'])}" if r["invalid_reason"] else ""),
                    )
                )
            elif key == "sim_valid":
                cells.append("–" if pd.isna(r[key]) else ("VALID" if bool(r[key]) else "INVALID"))
            elif key == "violation_rate":
                cells.append(fmt(100 * float(r[key]), 2))
            elif key == "service_excess":
                cells.append(fmt(100 * float(r[key]), 1) if pd.notna(r[key]) else "–")
            elif key == "fidelity_ok":
                reasons = r.get("fidelity_reasons")
                cells.append(
                    "–" if pd.isna(r[key]) else "ok" if bool(r[key]) else escape(f"HOST-LIMITED: {reasons or ''}")
                )
            elif digits is None:
                cells.append("" if pd.isna(r[key]) else escape(str(r[key])))
            elif digits == 0:
                v = pd.to_numeric(r[key], errors="coerce")
                cells.append("–" if pd.isna(v) else fmt(int(round(v))) if math.isfinite(v) else fmt(float(v)))
            else:
                cells.append(fmt(float(r[key]), digits))
        rows.append(cells)
        classes.append("valid" if r["valid"] else "invalid")
    note = (
        '<p class="note">p99 95% CI: from the phase alone, by sectioning (up to 20 contiguous sections of at least '
        "100 queries): for each latency the phase saw, the share of queries over it has a t-interval over the "
        "sections, and the interval holds the latencies whose band still reaches 1%. It is asymmetric, ∞ where the "
        "tail may be unserved queries, and missing for phases under 500 measured queries. A phase whose seconds held "
        "no burst cannot show one: read it as the least uncertainty there is. Live p99 vs sim: whether the live "
        "interval and the simulated one on the same arrivals overlap (within) or not (slower, faster).</p>"
    )
    return _table([escape(c[1]) for c in cols], rows, "num", classes) + note


def config_section(meta: dict) -> str:
    """The run's identity, configuration, pool, package versions and machine, as tables."""
    known = ("run_id", "kind", "started_at", "finished_at", "partial", "model", "qos_ms", "pool_config", "cost_per_h")
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
        rows = [
            [escape(fmt(p.get(k), 3) if isinstance(p.get(k), float) else str(p.get(k, ""))) for k in keys]
            for p in pool
            if isinstance(p, dict)
        ]
        parts += ["<h3>Pool</h3>", _table([escape(k) for k in keys], rows)]
    for key, title in (("versions", "Package versions"), ("machine", "Machine")):
        if isinstance(meta.get(key), dict) and meta[key]:
            parts += [f"<h3>{title}</h3>", _kv_table(meta[key])]
        elif meta.get(key) is not None:
            parts += [f"<h3>{title}</h3>", f"<p>{escape(str(meta[key]))}</p>"]
    return "\n".join(parts)


def _allocation_section(run: RunData) -> str:
    """The allocation table when allocation.parquet exists (a note in its place when it cannot be shown)."""
    if run.allocation is None:
        return ""
    try:
        return allocation_html(run.allocation)
    except Exception as exc:  # a report with every other section beats no report
        return (
            f'<section><h2>Configuration allocation</h2><p class="note">allocation.parquet could not be '
            f"shown: {escape(type(exc).__name__)}: {escape(str(exc))}</p></section>"
        )


def _busiest_host(summary: pd.DataFrame) -> str:
    """``; meanwhile other processes took up to X% of a core and the hypervisor up to Y% of the CPU`` over the phases
    that measured them ('' where none did): how quiet the host the passing checks vouch for was."""
    parts = []
    for col, text in (
        ("outside_cpu_percent", "other processes took up to {:.0f}% of a core"),
        ("host_steal_percent", "the hypervisor up to {:.1f}% of the CPU"),
    ):
        values = pd.to_numeric(summary[col], errors="coerce").dropna() if col in summary else pd.Series(dtype=float)
        if len(values):
            parts.append(text.format(values.max()))
    return "; meanwhile " + " and ".join(parts) if parts else ""


def _saturation_within_limits(summary: pd.DataFrame) -> str:
    """`` In k phases the harness passed its stricter saturation mark (lowest at R qps: why), not enough to fail
    them.`` ('' where no phase did): the summary table's "harness saturated at" column, explained beside "passed"."""
    if "harness_ok" not in summary or "harness_saturated_qps" not in summary:
        return ""
    marked = summary[summary["harness_ok"].notna() & ~summary["harness_ok"].fillna(True).astype(bool)]
    if marked.empty:
        return ""
    first = marked.loc[pd.to_numeric(marked["offered_qps"], errors="coerce").idxmin()]
    return (
        f" In {len(marked)} of {len(summary)} phases the load generator or the dispatcher passed the harness's "
        f"stricter saturation mark (lowest at {fmt(first['offered_qps'])} qps: {first.get('harness_reasons')}), "
        "not far enough to fail those checks."
    )


def fidelity_note(summary: pd.DataFrame) -> str:
    """A warning naming the phases whose self-checks failed: their figures are the host's, not the pool's."""
    if "fidelity_ok" not in summary:
        return ""
    failed = summary[summary["fidelity_ok"].notna() & ~summary["fidelity_ok"].fillna(True).astype(bool)]
    if failed.empty:
        return (
            '<p class="note" id="fidelity-note">Self-checks (host CPU, the dispatcher\'s CPU and event-loop lag, the '
            "load generator's send lag and rate, service time against the profile) passed in every phase"
            f"{escape(_busiest_host(summary))}.{escape(_saturation_within_limits(summary))}</p>"
        )
    items = "".join(
        f"<li>{escape(str(r['dispatcher']))} at {fmt(r['offered_qps'])} qps: {escape(str(r.get('fidelity_reasons')))}</li>"
        for _, r in failed.iterrows()
    )
    return (
        f'<div class="banner" id="fidelity-banner">Host-limited: {len(failed)} of {len(summary)} phases failed their '
        "self-checks, so their latencies (and any allowable throughput they decide) measure this host, not the "
        f"pool.<ul>{items}</ul></div>"
    )


def faults_section(run: RunData, colors: dict[str, str], qos_ms: float | None) -> tuple[str, dict | None]:
    """The faults a chaos schedule injected, what each cost, and a timeline chart; ("", None) for a run without."""
    faults = run.faults
    if faults is None or faults.empty:
        return "", None
    rows = []
    for _, f in faults.iterrows():
        armed = f.get("armed_epoch", math.nan)
        rows.append(
            [
                f.get("dispatcher"),
                f.get("phase"),
                fmt(f.get("offered_qps")),
                f.get("event"),
                f"+{fmt(f.get('fired_epoch', math.nan) - armed)} s",
                fmt(f.get("queries_in_window", math.nan), 0),
                fmt(f.get("not_served_in_window", math.nan), 0),
                fmt(f.get("violations_in_window", math.nan), 0),
                fmt(f.get("p99_in_window_ms", math.nan)),
                fmt(f.get("p99_outside_ms", math.nan)),
                f.get("error") or "",
            ]
        )
    table = _table(
        [
            "dispatcher",
            "phase",
            "offered qps",
            "fault",
            "fired",
            "queries in window",
            "not served",
            "QoS violations",
            "p99 in window (ms)",
            "p99 rest of phase (ms)",
            "delivery error",
        ],
        rows,
        cls="faults",
    )
    chart = None
    timelines, marks = [], []
    if run.queries is not None and {"arrival_s", "status", "dispatcher"} <= set(run.queries.columns):
        for d, group in faults.groupby("dispatcher", sort=False):
            armed = float(group["armed_epoch"].iloc[0])
            sel = run.queries[(run.queries["dispatcher"] == d) & (run.queries["arrival_s"] >= armed)]
            if len(sel):
                timelines.append((str(d), colors.get(d, "#444"), fault_timeline(sel, armed)))
            for _, f in group.drop_duplicates(["event", "action", "fired_epoch"]).iterrows():
                end = f["end_epoch"] if math.isfinite(f["end_epoch"]) else f["fired_epoch"]
                marks.append((f["fired_epoch"] - armed, end - armed, f"{f['action']} {f['instance']} ({d})"))
    if timelines:
        chart = dict(id=CHART_FAULTS, **fault_figure(timelines, marks, qos_ms))
    note = (
        '<p class="note">Each fault of the chaos schedule, per phase it touched. The window runs from when it fired '
        "to when it ended (a kill without a restart: to the end of the phase); its queries are those that arrived "
        "in it, against the rest of the same phase. A query not served counts as a QoS violation.</p>"
    )
    body = note + table + (_chart_div(CHART_FAULTS) if chart else "")
    return _section("Faults injected", body, "faults"), chart


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def _chart_div(chart_id: str) -> str:
    return f'<div id="{chart_id}" class="chart" data-chart="{chart_id}"></div>'


def render_report(run: RunData, plotly_js: str | None = None) -> str:
    """The whole page as one string (plotly.js inlined once; every chart drawn client-side from inline JSON)."""
    if plotly_js is None:
        plotly_js = get_plotlyjs()
    meta, summary, queries = run.meta, run.summary, run.queries
    qos = meta.get("qos_ms")
    qos_ms = float(qos) if isinstance(qos, (int, float)) and math.isfinite(qos) and qos > 0 else None
    dispatchers = list(dict.fromkeys(summary["dispatcher"]))
    colors = dispatcher_colors(dispatchers)
    charts: list[dict] = []
    body: list[str] = []

    charts.append(dict(id=CHART_P99, **p99_figure(summary, qos_ms, colors)))
    body.append(
        _section(
            "Tail latency vs offered load",
            '<p class="note">One line per dispatcher; filled markers are VALID steps, hollow ones '
            "INVALID, with the p99's 95% confidence interval. Dashed lines: the simulator's prediction "
            "on the same trace, where present.</p>" + _chart_div(CHART_P99),
            "p99",
        )
    )

    faults_html, faults_chart = faults_section(run, colors, qos_ms)
    if faults_chart:
        charts.append(faults_chart)
    if faults_html:
        body.append(faults_html)

    # The step shown per dispatcher in the distribution charts: its allowable rate, else its highest VALID rate.
    shown = []
    if queries is not None:
        for d in dispatchers:
            sel, label = step_queries(queries, d, shown_step(summary[summary["dispatcher"] == d]))
            if len(sel):
                shown.append((d, sel, label))
    missing = '<p class="note">No queries.parquet in this run directory: per-query charts are not available.</p>'

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
        types = instance_types(queries, meta)
        for _, sel, label in shown:
            util = utilization(sel, UTIL_BINS)
            if not util.empty:
                util_panels.append((label, util, types))
    if util_panels:
        charts.append(dict(id=CHART_UTIL, **utilization_figure(util_panels)))
        body.append(_section("Instance utilization", _chart_div(CHART_UTIL), "utilization"))
    else:
        body.append(
            _section(
                "Instance utilization",
                missing
                if queries is None
                else '<p class="note">No served queries with start/finish times and instances.</p>',
                "utilization",
            )
        )

    batch_panels = []
    if shown and "batch_size" in queries:
        for _, sel, label in shown:
            counts = batch_heatmap(sel)
            if counts.size and counts.to_numpy().sum() > 0:
                batch_panels.append((label, counts))
    if batch_panels:
        charts.append(dict(id=CHART_BATCH, **batch_figure(batch_panels)))
        body.append(_section("Batch placement", _chart_div(CHART_BATCH), "placement"))
    else:
        body.append(
            _section(
                "Batch placement",
                missing if queries is None else '<p class="note">No dispatched queries with batch sizes.</p>',
                "placement",
            )
        )

    run_cost = meta.get("cost_per_h") if isinstance(meta.get("cost_per_h"), (int, float)) else None
    body.append(
        _section(
            "Results per dispatcher",
            dispatcher_table(summary, run_cost) + "<h3>Every rate step</h3>" + steps_table(summary),
            "tables",
        )
    )
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
    if meta.get("harness_cpus"):  # --pin-cores: the servers had cores of their own (the Pool table lists them)
        facts.append(f"servers pinned, harness on cores {meta['harness_cpus']}")
    if isinstance(meta.get("config"), dict) and meta["config"].get("scale"):
        facts.append(f"scale: {meta['config']['scale']}")  # how the trace reached each rate (--scale)
    if run_cost is not None:
        facts.append(f"${run_cost:.3f}/h")
    if meta.get("started_at"):
        facts.append(f"started {meta['started_at']}")
    banner = f'<div class="banner" id="partial-banner">{escape(PARTIAL_BANNER)}</div>' if meta.get("partial") else ""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in run.notes)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            # Each asset on its own line after the opening tag, as the page had it when they were Python strings.
            f"<style>\n{_asset('style.css')}</style>",
            # errors.js runs before plotly.js so that errors while loading it are caught too; the browser test reads
            # #report-errors.
            f"<script>\n{_asset('errors.js')}</script>",
            f"<script>{plotly_js}</script>",
            "</head>",
            f'<body data-charts-expected="{len(charts)}">',
            '<pre id="report-errors" hidden></pre>',
            f"<header><h1>{escape(title)}</h1>",
            f'<p class="sub">{escape(" · ".join(facts))}</p></header>',
            banner,
            fidelity_note(summary),
            notes,
            _EXPLANATION.get(str((meta.get("config") or {}).get("criterion", "mlperf")), _EXPLANATION["mlperf"]),
            *body,
            f'<script type="application/json" id="report-chart-data">{_json_for_script(charts)}</script>',
            f"<script>\n{_asset('render.js')}</script>",
            "</body></html>",
            "",
        ]
    )


def build_report(run_dir: Path, *, out: Path | None = None) -> Path:
    """Write the self-contained HTML report of ``run_dir`` (default ``run_dir/report.html``); returns its path."""
    run = load_run(Path(run_dir))
    out = Path(out) if out is not None else run.run_dir / "report.html"
    html = render_report(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
