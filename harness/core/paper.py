"""The Kairos paper's setup: per-model QoS targets (p99 latency, ms), its pool and its budget."""

from __future__ import annotations

from harness.core.errors import InputError

PAPER_QOS_MS = {"ncf": 5.0, "rm2": 350.0, "wnd": 25.0, "mtwnd": 25.0, "dien": 35.0}
PAPER_CONFIG = "g4dn.xlarge=2,r5n.large=9"
PAPER_BUDGET_PER_H = 2.5


def default_qos_ms(model: str) -> float | None:
    """The paper's QoS for ``model``, or None for a model the paper did not use."""
    return PAPER_QOS_MS.get(model)


def resolve_qos_ms(model: str, qos_ms: float | None) -> float:
    """The QoS target: ``qos_ms`` when given, else the paper's for ``model``; an error when neither exists."""
    qos = qos_ms if qos_ms is not None else default_qos_ms(model)
    if qos is None:
        raise InputError(f"is required for model {model!r} (no paper default)", field="qos_ms")
    if not qos > 0:
        raise InputError(f"{qos}: must be > 0", field="qos_ms")
    return float(qos)
