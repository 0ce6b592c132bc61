"""What a dispatcher is: its pool, policy, QoS, latency-model source, limits, records file and admin token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import InputError
from harness.core.paper import resolve_qos_ms
from servers.pool_file import PoolFile


@dataclass(frozen=True)
class DispatcherConfig:
    """A dispatcher: its pool, policy, QoS, latency-model source, limits, records file and admin token."""

    pool: PoolFile
    policy: str = "kairos"
    qos_ms: float | None = None
    profiles: Path | None = None
    latency_alpha: float = 0.05
    max_queue: int = 10_000
    concurrency: int = 1
    prefetch_ms: float = 3.0
    records_path: Path | None = None
    admin_token: str | None = None
    backend_timeout_s: float = 60.0
    max_retries: int = 1
    health_interval_s: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.concurrency < 1:
            raise InputError(f"{self.concurrency}: must be >= 1", field="concurrency")
        if not self.prefetch_ms >= 0:
            raise InputError(f"{self.prefetch_ms}: must be >= 0", field="prefetch_ms")

    def resolved_qos_ms(self) -> float:
        """The QoS target: given, or the paper's for the pool's model."""
        return resolve_qos_ms(self.pool.model, self.qos_ms)
