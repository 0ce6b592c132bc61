"""The Kairos paper's per-model QoS targets (p99 latency, ms), used when ``--qos-ms`` is not given."""

PAPER_QOS_MS = {"ncf": 5.0, "rm2": 350.0, "wnd": 25.0, "mtwnd": 25.0, "dien": 35.0}
PAPER_CONFIG = "g4dn.xlarge=2,r5n.large=9"
PAPER_BUDGET_PER_H = 2.5


def default_qos_ms(model: str) -> float | None:
    """The paper's QoS for ``model``, or None for a model the paper did not use."""
    return PAPER_QOS_MS.get(model)
