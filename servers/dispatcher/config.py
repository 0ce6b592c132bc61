"""What a dispatcher is: its pool, policy, QoS, latency-model source, limits, records file and admin token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import InputError
from harness.core.paper import resolve_qos_ms
from servers.pool_file import PoolFile

# A query that waited 10 QoS targets is a violation however it ends; waiting longer only keeps the queue full.
QUEUE_TIMEOUT_QOS = 10.0


@dataclass(frozen=True)
class DispatcherConfig:
    """A dispatcher: its pool, policy, QoS, latency-model source, limits, records file and admin token."""

    pool: PoolFile
    policy: str = "kairos"
    qos_ms: float | None = None
    profiles: Path | None = None
    # Online updates of the latency model from observed service times. Off by default, as in the simulator: what the
    # dispatcher observes includes its own round trip to the instance, which the early slot (prefetch) overlaps with
    # service, so a model that learns it opens the early slot late and the instance idles. Measured with MLPerf
    # LoadGen on the paper pool, rm2 batch 100 (benchmarks/loadgen_compare.py): 230 qps at 0.05, 248.8 qps at 0.
    latency_alpha: float = 0.0
    max_queue: int = 10_000
    # Request bodies the dispatcher may hold at once (queued or in service); beyond it a new query is shed with 503.
    # Under overload the queue's bodies are what the process's memory grows with (rm2: ~136 KB a query on average);
    # 64 MiB holds ~490 such queries, more than the paper pool serves within its 3.5 s queue deadline.
    max_held_bytes: int = 64 << 20
    concurrency: int = 1
    prefetch_ms: float = 3.0
    records_path: Path | None = None
    admin_token: str | None = None
    backend_timeout_s: float = 60.0
    max_retries: int = 1
    health_interval_s: float = 1.0
    # Outlier detection, after Envoy's: this many consecutive failures (5xx, timeouts, dropped connections) eject an
    # instance (a refused connection at once: nothing listens); a 4xx never does, it is the request's fault.
    eject_after_failures: int = 3
    max_ejected_fraction: float = 0.5  # never eject more than this share of the pool at once
    # A query still queued this long after arrival is answered 504 and recorded (None: QUEUE_TIMEOUT_QOS x QoS).
    queue_timeout_ms: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.max_held_bytes < 1:
            raise InputError(f"{self.max_held_bytes}: must be >= 1", field="max_held_bytes")
        if self.concurrency < 1:
            raise InputError(f"{self.concurrency}: must be >= 1", field="concurrency")
        if not self.prefetch_ms >= 0:
            raise InputError(f"{self.prefetch_ms}: must be >= 0", field="prefetch_ms")
        if self.eject_after_failures < 1:
            raise InputError(f"{self.eject_after_failures}: must be >= 1", field="eject_after_failures")
        if not 0 <= self.max_ejected_fraction <= 1:
            raise InputError(f"{self.max_ejected_fraction}: must be in [0, 1]", field="max_ejected_fraction")
        if self.queue_timeout_ms is not None and not self.queue_timeout_ms > 0:
            raise InputError(f"{self.queue_timeout_ms}: must be > 0", field="queue_timeout_ms")

    def resolved_qos_ms(self) -> float:
        """The QoS target: given, or the paper's for the pool's model."""
        return resolve_qos_ms(self.pool.model, self.qos_ms)

    def resolved_queue_timeout_s(self) -> float:
        """How long a query may wait for an instance: given, or QUEUE_TIMEOUT_QOS times the QoS target."""
        ms = self.queue_timeout_ms if self.queue_timeout_ms is not None else QUEUE_TIMEOUT_QOS * self.resolved_qos_ms()
        return ms / 1000.0
