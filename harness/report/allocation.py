"""The allocation table as a self-contained HTML fragment (one ``<section>``, inline styles, no scripts)."""

from __future__ import annotations

import math
from html import escape

import pandas as pd

_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:right"
_LEFT = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"
_PICKED = "background:#fff4cc"


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return escape(str(value))


def allocation_html(frame: pd.DataFrame, max_rows: int = 25) -> str:
    """A ``<section>`` with the ranked configurations (top ``max_rows`` by Kairos bound plus every pick)."""
    attrs = frame.attrs or {}
    title = "Configuration allocation"
    if attrs.get("model"):
        title += (
            f": {escape(str(attrs['model']))}, p99 &le; {attrs.get('qos_ms', float('nan')):g} ms, "
            f"budget ${attrs.get('budget_per_h', float('nan')):.2f}/h"
        )
    picked = frame["picked_by"].astype(str).str.len() > 0 if "picked_by" in frame else pd.Series(False, frame.index)
    shown = frame[(frame.index < max_rows) | picked]
    columns = [
        ("kairos_rank", "Kairos rank", 0),
        ("config", "configuration", None),
        ("cost_per_h", "$/h", 3),
        ("kairos_bound_qps", "Kairos bound qps", 1),
        ("fluid_bound_qps", "fluid bound qps", 1),
        ("queue_estimate_qps", "queueing-aware estimate qps", 1),
        ("allowable_qps", "allowable qps (search)", 1),
        ("final_allowable_qps", "allowable qps (final)", 1),
        # What a million queries served within QoS cost on it, at the best allowable rate found (final or search).
        ("usd_per_million", "$ per million queries", 3),
        ("picked_by", "picked by", None),
    ]
    columns = [c for c in columns if c[0] in frame.columns]
    head = "".join(f'<th style="{_LEFT if d is None else _CELL}">{escape(label)}</th>' for _, label, d in columns)
    body = []
    for i, row in shown.iterrows():
        cells = []
        for key, _, digits in columns:
            value = row[key]
            if key == "kairos_rank":
                text = str(int(value)) if int(value) > 0 else "&ndash;"
            elif digits is None:
                text = escape(str(value))
            else:
                text = _fmt(float(value), digits)
            cells.append(f'<td style="{_LEFT if digits is None else _CELL}">{text}</td>')
        style = f' style="{_PICKED}"' if picked.loc[i] else ""
        body.append(f"<tr{style}>{''.join(cells)}</tr>")
    note = (
        f"<p>{len(frame)} configurations; showing the {min(max_rows, len(frame))} with the highest Kairos "
        f"bound and every method's pick (highlighted). Allowable throughput is simulated; &ndash; means not "
        f"evaluated.</p>"
    )
    return (
        f'<section class="kairos-allocation">\n<h2>{title}</h2>\n{note}\n'
        f'<table style="border-collapse:collapse;font-family:sans-serif;font-size:13px">\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n</section>\n"
    )
