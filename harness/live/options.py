"""What a live run does, as one frozen dataclass; the locustfile's options translate into it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.core.errors import InputError
from harness.core.paper import PAPER_CONFIG
from harness.live.chaos import ChaosEvent
from harness.live.local_profile import CONTENTION
from harness.measure.analyzer import ValidityRules
from servers.pool import PoolSpec, check_instances_per_process

DEFAULT_DISPATCHERS = ("kairos", "fcfs", "least_outstanding")
PROFILE_LOCAL = (*CONTENTION, "off")
HARNESS_SATURATION = ("flag", "invalid")  # what a phase that saturated the harness counts as


@dataclass(frozen=True)
class LiveOptions:
    """What a live run does; the locustfile's options translate into this."""

    trace: Path | None = None
    model: str | None = None
    pool_file: Path | None = None
    pool_config: str = PAPER_CONFIG
    mode: str = "emulated"
    # Emulated instances per process of the pool the run starts (servers.pool.PoolSpec says why one by default).
    instances_per_process: int = PoolSpec.instances_per_process
    dispatchers: tuple[str, ...] = DEFAULT_DISPATCHERS
    qos_ms: float | None = None
    rate_qps: float | None = None
    speedup: float | None = None
    scale: str = "time"  # how a phase reaches its rate: a key of traces.scalers.SCALERS (time, thin, superpose)
    sweep: bool = False
    phase_seconds: float = 10.0
    phase_queries: int = 500
    report_dir: Path = Path("reports")
    seed: int = 0
    profiles: Path | None = None
    tolerance: float = 0.05
    growth: float = 1.15
    max_phases: int = 8
    min_queries: int = 200
    criterion: str = "p99"
    lead_s: float = 2.0
    # Extra phases at each end of the final bracket, on other trace windows and seeds. One by default: a single
    # window's sectioned band misses the window-to-window spread (three default runs: 108.6, 108.6, 105.0 qps, each
    # outside another's interval without it).
    replications: int = 1
    # After that, rates chased one growth step past a bound of the interval still at the edge of the rates tried (each
    # run 1 + replications times). One by default: the default run's kairos sweep starts at the simulator's answer and
    # passes there, so without it the lower bound sat at that first rate, censored (108.6 [<=108.6..109.6]).
    interval_steps: int = 1
    # A phase whose load generator or dispatcher failed its checks (harness.measure.fidelity.harness_checks): "flag"
    # marks it (fidelity_ok false, the harness's saturation rate in the summary); "invalid" also fails it, so the
    # allowable rate stays below where the harness saturated. Flag by default: on a shared 2-core host the generator's
    # send-lag p99 passes 5 ms at 6-16% CPU in a third of the default run's phases (jitter, not saturation).
    harness_saturation: str = "flag"
    chaos: tuple[ChaosEvent, ...] = ()  # faults to inject during each dispatcher's phases
    # --mode onnx: measure the started servers before the sweep (harness.live.local_profile): together, alone, off
    profile_local: str = "together"
    reprofile: bool = False  # measure again even when the profile cache has this pool
    # --mode onnx: each server on cores of its own, this process and the dispatcher on the rest (servers.cpu_affinity)
    pin_cores: bool = False
    # A dispatcher this run does not start (on another host, with an admin token): its base URL. pool_file then names
    # the pool it fronts, and the admin calls (policy, drain, records) carry the token read from
    # dispatcher_token_file: a file, so the secret is in neither run.json nor the process list.
    dispatcher_url: str | None = None
    dispatcher_token_file: Path | None = None

    def __post_init__(self):
        if self.dispatcher_url is not None:
            parts = urlsplit(self.dispatcher_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InputError(f"{self.dispatcher_url!r}: expected http://HOST:PORT", field="dispatcher_url")
            if self.pool_file is None:
                raise InputError(
                    "names a dispatcher this run does not start: give the pool file of the instances it fronts too",
                    field="dispatcher_url",
                )
        check_instances_per_process(self.instances_per_process, self.mode)
        if self.pin_cores and (self.mode != "onnx" or self.pool_file is not None):
            raise InputError(
                "pins the ONNX Runtime servers this run starts: give --mode onnx and no pool file", field="pin_cores"
            )
        if self.harness_saturation not in HARNESS_SATURATION:
            raise InputError(
                f"{self.harness_saturation!r}: expected one of {', '.join(HARNESS_SATURATION)}",
                field="harness_saturation",
            )
        if self.replications < 0:
            raise InputError(f"{self.replications}: must be >= 0", field="replications")
        if self.interval_steps < 0:
            raise InputError(f"{self.interval_steps}: must be >= 0", field="interval_steps")
        if self.profile_local not in PROFILE_LOCAL:
            raise InputError(
                f"{self.profile_local!r}: expected one of {', '.join(PROFILE_LOCAL)}", field="profile_local"
            )

    @property
    def profiles_local(self) -> bool:
        """Whether the run measures its own servers: an onnx pool it starts, no --profiles given, not turned off."""
        return self.mode == "onnx" and not self.pool_file and self.profiles is None and self.profile_local != "off"

    @property
    def sweeping(self) -> bool:
        """A sweep when asked, or when no fixed load (--rate/--speedup) is given."""
        return self.sweep or (self.rate_qps is None and self.speedup is None)

    @property
    def rules(self) -> ValidityRules:
        """Validity of a live phase (after a 5% warm-up); p99 <= QoS by default, early stopping reported too."""
        return ValidityRules(
            min_queries=self.min_queries, min_duration_s=0.5 * self.phase_seconds, criterion=self.criterion
        )
