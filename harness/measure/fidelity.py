"""Fidelity of a live phase: did the host, the load generator or the emulation, rather than the pool, set its figure?

Pure functions over a phase's records and measurements. ``service_vs_profile`` compares the service time the
dispatcher observed per (instance type, batch bucket) with the profile's mean; ``fidelity_checks`` turns a phase's
measurements into ``fidelity_ok`` and the reasons it failed, naming a busy host (``busy_host``) as their likely cause.
Thresholds are a frozen ``FidelityLimits``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.core.profiles import Profile
from harness.core.records import OK


@dataclass(frozen=True)
class FidelityLimits:
    """Where a phase stops being a measurement of the pool."""

    # Mean over cores: the host had no CPU left for the emulation. Real ONNX Runtime servers compute on the host, so
    # there a busy host is the pool at work: the live run passes inf and relies on the service-time check.
    host_cpu_percent: float = 90.0
    process_cpu_percent: float = 90.0  # of one core: a single-threaded process (the dispatcher) was CPU-bound
    loop_lag_p99_ms: float = 10.0  # the dispatcher's loop woke this late: queries waited on the process, not the pool
    send_lag_p99_ms: float = 10.0  # the load generator sent this late: the arrival process was not the trace's
    # The harness's own saturation (issue 12): a generator whose send lag p99 passes 5 ms no longer keeps its schedule,
    # or one above 85% of a core. Stricter than the fidelity limit above, which asks whether the lag moved the figure:
    # on a shared 2-core host the lag passes 5 ms at 6-16% CPU in a third of the default run's phases.
    saturation_send_lag_p99_ms: float = 5.0
    loadgen_cpu_percent: float = 85.0
    send_rate_shortfall: float = 0.05  # achieved send rate below offered by more than this share
    # The service time the dispatcher observed above the profile's (the hop to the instance, the emulating host's
    # CPU) lowers the pool's live capacity by that share. Below the sweep's own resolution (its 5% tolerance) it
    # cannot be told apart; above it, while the pool is busy enough for service times to move the tail, the
    # phase's figure is the host's.
    service_excess: float = 0.05
    # Judged where it matters: when the simulator, given this host's service times, moves the phase's p99 by more than
    # this share. (A lightly loaded pool's tail can still hang on service time: a QoS near the largest batch's.)
    tail_moved: float = 0.05
    busy_utilization: float = 0.5  # offered load over capacity by the profile: the gate where no simulated p99 is known
    min_bucket_queries: int = 10  # a (type, bucket) with fewer served queries is not judged
    # A busy host, named as the cause beside a failed check (never a failure on its own: the checks above judge
    # whether it moved the figure): processes outside the run above this share of one core, or the hypervisor
    # stealing this share of the host's CPU.
    outside_cpu_percent: float = 20.0
    steal_percent: float = 5.0


def profiled_mean_ms(queries: pd.DataFrame, profile: Profile, model: str) -> np.ndarray:
    """Each query's profiled mean service (ms) for its ``instance_type`` and ``batch_size``, in row order."""
    return np.array(
        [profile.mean_ms(str(t), model, int(b)) for t, b in zip(queries["instance_type"], queries["batch_size"])],
        dtype=float,
    )


def service_vs_profile(queries: pd.DataFrame, profile: Profile, model: str, min_queries: int = 10) -> pd.DataFrame:
    """Observed mean service time against the profile's per (instance type, bucket) with at least ``min_queries``."""
    served = queries[(queries["status"] == OK) & np.isfinite(queries["service_ms"].to_numpy(float))]
    rows = []
    for itype, group in served.groupby("instance_type"):
        try:
            table = profile.table(str(itype), model)
        except ValueError:  # a type the profile does not know (a hand-made pool): nothing to compare with
            continue
        idx = np.searchsorted(table.buckets, group["batch_size"].to_numpy(), side="left")
        inside = idx < len(table.buckets)
        for k, g in group[inside].groupby(idx[inside]):
            if len(g) < min_queries:
                continue
            rows.append(
                {
                    "instance_type": str(itype),
                    "bucket": int(table.buckets[k]),
                    "queries": len(g),
                    "observed_ms": float(g["service_ms"].mean()),
                    "profile_ms": float(table.mean_ms[k]),
                }
            )
    frame = pd.DataFrame(rows, columns=["instance_type", "bucket", "queries", "observed_ms", "profile_ms"])
    frame["excess"] = frame["observed_ms"] / frame["profile_ms"] - 1.0
    return frame


def bucket_factors(
    tables: list[pd.DataFrame], profile: Profile, model: str, min_queries: int = 10
) -> tuple[dict, float]:
    """Per (instance type, model), each bucket's observed over profiled mean service from ``service_vs_profile``
    tables pooled (query-weighted; a bucket counts once the tables together served ``min_queries`` of it), and the
    factor for what they did not measure: all of them, time-weighted (``1 + weighted_excess``; 1.0 when they measured
    nothing). A bucket left unmeasured takes its type's factor."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return {}, 1.0
    rows = pd.concat(tables, ignore_index=True)
    rows = rows.assign(obs_total=rows["queries"] * rows["observed_ms"], prof_total=rows["queries"] * rows["profile_ms"])
    pooled = rows.groupby(["instance_type", "bucket"], as_index=False)[["queries", "obs_total", "prof_total"]].sum()
    pooled = pooled[pooled["queries"] >= min_queries]
    if pooled.empty:
        return {}, 1.0
    overall = float(pooled["obs_total"].sum() / pooled["prof_total"].sum())
    factors = {}
    for itype, group in pooled.groupby("instance_type"):
        table = profile.table(str(itype), model)
        own = float(group["obs_total"].sum() / group["prof_total"].sum())
        f = np.full(len(table.buckets), own)
        idx = np.searchsorted(table.buckets, group["bucket"].to_numpy())
        f[idx] = (group["obs_total"] / group["prof_total"]).to_numpy()
        factors[(str(itype), model)] = f
    return factors, overall


def weighted_excess(table: pd.DataFrame) -> float:
    """Time-weighted excess of observed over profiled service: sum(observed) / sum(profiled) - 1 over all queries."""
    if table.empty:
        return math.nan
    n = table["queries"].to_numpy(float)
    return float((n * table["observed_ms"]).sum() / (n * table["profile_ms"]).sum() - 1.0)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _over(m: dict, key: str, limit: float) -> bool:
    value = m.get(key)
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value) and value > limit


def p99_against_sim(m: dict) -> str:
    """Where the live p99's 95% interval lies against the simulated one's on the same arrivals: ``slower`` or
    ``faster`` when they do not overlap, ``within`` when they do, '' when either is unknown."""
    keys = ("p99_ci_low_ms", "p99_ci_high_ms", "sim_p99_ci_low_ms", "sim_p99_ci_high_ms")
    bounds = [m.get(k) for k in keys]
    if not all(isinstance(b, (int, float)) and not math.isnan(b) for b in bounds):
        return ""
    live_low, live_high, sim_low, sim_high = bounds
    if live_low > sim_high:
        return "slower"
    if live_high < sim_low:
        return "faster"
    return "within"


def busy_host(m: dict, limits: FidelityLimits = FidelityLimits()) -> str:
    """What else took the host's CPU during a phase (processes outside the run, the hypervisor's steal), past
    ``limits``; '' when nothing did or it was not measured."""
    parts = []
    if _over(m, "outside_cpu_percent", limits.outside_cpu_percent):
        top = m.get("outside_top")
        parts.append(
            f"processes outside the run took {m['outside_cpu_percent']:.0f}% of a core"
            + (f" (most: {top})" if top else "")
        )
    if _over(m, "host_steal_percent", limits.steal_percent):
        parts.append(f"the hypervisor stole {m['host_steal_percent']:.0f}% of the CPU")
    return "; ".join(parts)


def harness_checks(m: dict, limits: FidelityLimits = FidelityLimits()) -> tuple[bool, list[str]]:
    """``(ok, reasons)``: did the harness itself (load generator, dispatcher process) saturate in this phase?"""
    reasons = _generator_reasons(m, limits, limits.saturation_send_lag_p99_ms) + _process_reasons(m, limits)
    return not reasons, _with_cause(reasons, m, limits)


def _generator_reasons(m: dict, limits: FidelityLimits, send_lag_p99_ms: float) -> list[str]:
    """The load generator's CPU and its send lag against ``send_lag_p99_ms``."""
    reasons = []
    if _over(m, "loadgen_cpu_percent", limits.loadgen_cpu_percent):
        reasons.append(f"load generator CPU {m['loadgen_cpu_percent']:.0f}% of a core")
    if _over(m, "send_lag_p99_ms", send_lag_p99_ms):
        reasons.append(f"load generator send lag p99 {m['send_lag_p99_ms']:.1f} ms")
    return reasons


def _process_reasons(m: dict, limits: FidelityLimits) -> list[str]:
    """The checks the harness and the fidelity verdict share: the send rate, the dispatcher's CPU and loop."""
    reasons = []
    planned, sent = m.get("planned_send_qps"), m.get("sent_qps")
    if planned and sent is not None and math.isfinite(sent) and sent < (1 - limits.send_rate_shortfall) * planned:
        reasons.append(f"sent {sent:.1f} qps where the plan sends {planned:.1f}")
    if _over(m, "dispatcher_cpu_percent", limits.process_cpu_percent):
        reasons.append(f"dispatcher CPU {m['dispatcher_cpu_percent']:.0f}% of a core")
    if _over(m, "loop_lag_p99_ms", limits.loop_lag_p99_ms):
        reasons.append(f"dispatcher event-loop lag p99 {m['loop_lag_p99_ms']:.1f} ms")
    return reasons


def fidelity_checks(m: dict, limits: FidelityLimits = FidelityLimits()) -> tuple[bool, list[str]]:
    """``(ok, reasons)`` from a phase's measurements: the harness's checks and the host's (missing or NaN
    measurements are not judged)."""
    reasons = []
    if _over(m, "host_cpu_percent", limits.host_cpu_percent):
        reasons.append(f"host CPU {m['host_cpu_percent']:.0f}% (limit {limits.host_cpu_percent:.0f}%)")
    reasons += _generator_reasons(m, limits, limits.send_lag_p99_ms) + _process_reasons(m, limits)
    base, adjusted = m.get("sim_p99_ms"), m.get("sim_p99_host_adjusted_ms")
    if _finite(base) and _finite(adjusted) and base > 0:
        matters = adjusted > (1.0 + limits.tail_moved) * base
    else:
        matters = _over(m, "utilization", limits.busy_utilization)
    if _over(m, "service_excess", limits.service_excess) and matters:
        adjusted = m.get("sim_p99_host_adjusted_ms")
        moved = f"; the simulator with this host's service times gives p99 {adjusted:.1f} ms" if adjusted else ""
        reasons.append(
            f"service {100 * m['service_excess']:.1f}% slower than profiled at {100 * m['utilization']:.0f}% "
            f"utilization (limit {100 * limits.service_excess:.0f}%){moved}"
        )
    return not reasons, _with_cause(reasons, m, limits)


def _with_cause(reasons: list[str], m: dict, limits: FidelityLimits) -> list[str]:
    """``reasons`` and, where some check failed while something else kept the host busy, that as its likely cause."""
    busy = busy_host(m, limits) if reasons else ""
    return reasons + [f"busy host: {busy}"] if busy else reasons
