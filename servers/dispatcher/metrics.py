"""The dispatcher's ``/metrics`` page (Prometheus text exposition format 0.0.4)."""

from __future__ import annotations

from aiohttp import web

from servers.dispatcher.state import DISPATCHER, Dispatcher
from servers.dispatcher.stats import LATENCY_BUCKETS_MS


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def prometheus_text(d: Dispatcher) -> str:
    """The ``/metrics`` body (Prometheus text exposition format 0.0.4)."""
    out = [
        "# HELP kairos_queue_length Queries waiting in the central queue.",
        "# TYPE kairos_queue_length gauge",
        f"kairos_queue_length {len(d.core.pending)}",
        "# HELP kairos_in_system Requests queued or in service.",
        "# TYPE kairos_in_system gauge",
        f"kairos_in_system {d.in_system}",
        "# HELP kairos_instance_busy Queries running on the instance.",
        "# TYPE kairos_instance_busy gauge",
    ]
    for i in d.instances:
        out.append(
            f'kairos_instance_busy{{instance="{_label(i.instance_id)}",type="{_label(i.instance_type)}"}} {i.running}'
        )
    out += [
        "# HELP kairos_instance_outstanding Queries assigned to the instance (running + local FIFO).",
        "# TYPE kairos_instance_outstanding gauge",
    ]
    for i in d.instances:
        out.append(f'kairos_instance_outstanding{{instance="{_label(i.instance_id)}"}} {i.outstanding}')
    out += ["# HELP kairos_instance_up 1 while the instance is in service.", "# TYPE kairos_instance_up gauge"]
    for i in d.instances:
        out.append(f'kairos_instance_up{{instance="{_label(i.instance_id)}"}} {int(i.alive)}')
    out += [
        "# HELP kairos_requests_total Finished requests by policy and status.",
        "# TYPE kairos_requests_total counter",
    ]
    stats = d.stats
    for (p, s), n in sorted(stats.counts.items()):
        out.append(f'kairos_requests_total{{policy="{_label(p)}",status="{s}"}} {n}')
    out += [
        "# HELP kairos_latency_ms End-to-end latency at the dispatcher of served requests.",
        "# TYPE kairos_latency_ms histogram",
    ]
    for p, hist in sorted(stats.hist.items()):
        cum = 0
        for b, n in zip(LATENCY_BUCKETS_MS, hist):
            cum += n
            out.append(f'kairos_latency_ms_bucket{{policy="{_label(p)}",le="{b}"}} {cum}')
        cum += hist[-1]
        out.append(f'kairos_latency_ms_bucket{{policy="{_label(p)}",le="+Inf"}} {cum}')
        out.append(f'kairos_latency_ms_sum{{policy="{_label(p)}"}} {stats.latency_sum_ms.get(p, 0.0):.3f}')
        out.append(f'kairos_latency_ms_count{{policy="{_label(p)}"}} {cum}')
    return "\n".join(out) + "\n"


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``."""
    return web.Response(
        text=prometheus_text(request.app[DISPATCHER]),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Prometheus-Format": "0.0.4"},
    )
