"""Profiles of the ONNX Runtime servers a live run starts on this machine: measured before the sweep, cached.

In ``--mode onnx`` the instance types are this machine's own servers (``cpu-1t``, ``cpu-2t``: ``servers.host_types``),
or labels; either way the shipped AWS profile does not describe them. Before the sweep every instance is measured
(``harness.live.profiler.capture``) and the schedulers, the dispatcher and the simulator use what was measured.

``contention="together"`` (the default) measures all instances at once, each kept busy until the last has finished
its samples: servers that share a few cores slow each other when all are busy, as they are near the allowable
load, and a profile taken one server at a time then overstates the pool's capacity. ``"alone"`` measures one
instance at a time, the others idle: what ``kairos profile`` does, right when each instance has cores to itself.

The result is cached under ``$KAIROS_PROFILE_DIR`` (default ``~/.cache/kairos-harness/profiles``), keyed by the
model's spec hash, every instance's provider, threads and concurrency, the contention mode, the sample counts and
the machine (CPU model, logical CPUs, architecture, ONNX Runtime version): another machine, thread count or model
build is measured afresh. The cache holds rows for the largest batch measured; a trace with larger batches
measures again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.profiles import PROFILE_COLUMNS
from harness.live.host import CpuSnapshot, outside_cpu
from harness.live.profiler import CaptureConfig, capture, keep_busy
from harness.measure.fidelity import busy_host
from servers import models
from servers.pool import Pool
from servers.pool_file import Instance

PROFILE_DIR_ENV = "KAIROS_PROFILE_DIR"
CONTENTION = ("together", "alone")
# Bumped when what a capture measures changes, so old cache entries are not reused (2: ORT threads no longer spin).
CAPTURE_VERSION = 2


@dataclass(frozen=True)
class LocalProfileConfig:
    """How the local servers are profiled: contention mode, samples and warm-up per bucket, bucket grid, cache."""

    contention: str = "together"
    samples: int = 20
    warmup: int = 3
    bucket_step: int = 10  # buckets 10, 20, ... as in the shipped profile: a batch is served by the bucket above it
    cache_dir: Path | None = None
    refresh: bool = False  # measure again even when the cache has this key
    seed: int = 0

    def __post_init__(self):
        if self.contention not in CONTENTION:
            raise InputError(f"{self.contention!r}: expected one of {', '.join(CONTENTION)}", field="contention")
        if self.bucket_step < 1:
            raise InputError(f"{self.bucket_step}: must be >= 1", field="bucket_step")

    def directory(self) -> Path:
        """The cache folder: ``cache_dir``, ``$KAIROS_PROFILE_DIR``, else ``$XDG_CACHE_HOME/kairos-harness/profiles``."""
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        env = os.environ.get(PROFILE_DIR_ENV)
        if env:
            return Path(env).expanduser()
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(cache).expanduser() / "kairos-harness" / "profiles"


@dataclass(frozen=True)
class ServerSettings:
    """What makes one instance's service time: its type label, execution provider, threads, concurrency, cores."""

    instance_type: str
    provider: str
    threads: int
    concurrency: int
    cpus: tuple[int, ...] = ()  # the cores it is pinned to (servers.cpu_affinity); () not pinned


def pool_settings(pool: Pool) -> list[ServerSettings]:
    """What each instance of a started onnx pool runs with, in id order (its server configs, with their cores)."""
    return [
        ServerSettings(c.instance_type, c.provider, c.threads, c.concurrency, c.cpus)
        for c in pool.spec.instance_configs(pool.pinning)
    ]


def machine() -> dict:
    """What identifies this machine's speed for a profile: CPU model, logical CPUs, architecture, ORT version."""
    import onnxruntime  # the servers' runtime: a new version can change every latency

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "arch": platform.machine(),
        "onnxruntime": onnxruntime.__version__,
    }


def buckets_for(max_batch: int, step: int) -> tuple[int, ...]:
    """Buckets ``step, 2*step, ...`` up to the first one >= ``max_batch`` (every batch then has a bucket above it)."""
    if max_batch < 1:
        raise InputError(f"{max_batch}: must be >= 1", field="max_batch")
    top = -(-max_batch // step) * step
    return tuple(range(step, top + 1, step))


def _settings_doc(s: ServerSettings) -> dict:
    doc = asdict(s)
    if not s.cpus:  # unpinned servers keep the keys they had before pinning existed: no needless re-measure
        del doc["cpus"]
    return doc


def cache_key(model: str, servers: list[ServerSettings], config: LocalProfileConfig, host: dict) -> str:
    """A short hash of everything that shapes the measured latencies (not the bucket range: that is checked)."""
    doc = {
        "version": CAPTURE_VERSION,
        "model": model,
        "model_hash": models.get_spec(model).spec_hash() if model in models.MODEL_NAMES else None,
        "servers": sorted((_settings_doc(s) for s in servers), key=lambda d: json.dumps(d, sort_keys=True)),
        "contention": config.contention,
        "samples": config.samples,
        "warmup": config.warmup,
        "machine": host,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _measure_one(inst: Instance, model: str, batches: tuple[int, ...], config: LocalProfileConfig, seed: int):
    """Rows of one instance (its batch order shuffled, so no bucket is measured only while others idle)."""
    order = tuple(int(b) for b in np.random.default_rng(seed).permutation(np.asarray(batches)))
    capture_config = CaptureConfig(
        url=inst.url,
        model=model,
        instance_type=inst.instance_type,
        batches=order,
        samples=config.samples,
        warmup=config.warmup,
        # Back to back, as before: this profile feeds this host's simulator, which has no transport of its own, and
        # near the allowable load the servers are not idle between queries.
        idle_transport=False,
        seed=seed,
    )
    return capture(capture_config)


def measure(
    instances: list[Instance],
    model: str,
    batches: tuple[int, ...],
    config: LocalProfileConfig,
) -> pd.DataFrame:
    """Profile rows (shared schema) for every instance type, measured as ``config.contention`` says."""
    seeds = np.random.SeedSequence(config.seed).generate_state(len(instances))
    if config.contention == "alone":
        frames = [_measure_one(inst, model, batches, config, int(s)) for inst, s in zip(instances, seeds)]
        return pd.concat(frames, ignore_index=True)
    results: dict[int, pd.DataFrame] = {}
    errors: list[BaseException] = []
    done, stop = threading.Semaphore(0), threading.Event()

    def work(k: int) -> None:
        try:
            results[k] = _measure_one(instances[k], model, batches, config, int(seeds[k]))
        except BaseException as exc:  # raised again in the caller, after every thread stopped
            errors.append(exc)
            stop.set()
        finally:
            done.release()
        if not stop.is_set():  # keep this server as busy as the others until every one has its samples
            keep_busy(instances[k].url, model, int(np.median(batches)), stop, seed=int(seeds[k]))

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(instances))]
    for t in threads:
        t.start()
    for _ in instances:
        done.acquire()
    stop.set()
    for t in threads:
        t.join(timeout=120.0)
    if errors:
        raise errors[0]
    return pd.concat([results[k] for k in range(len(instances))], ignore_index=True)


def local_profile(
    instances: list[Instance],
    settings: list[ServerSettings],
    model: str,
    max_batch: int,
    out: Path,
    config: LocalProfileConfig = LocalProfileConfig(),
    log: Callable[[str], None] = print,
) -> dict:
    """Write the pool's profile to ``out`` (from the cache when it has this key, else measured and cached);
    returns what was done (``key``, ``cached``, ``path``, ``seconds``, ``machine``, ``contention``)."""
    host = machine()
    key = cache_key(model, settings, config, host)
    batches = buckets_for(max_batch, config.bucket_step)
    folder = config.directory()
    cached = folder / f"{model}-{key}.parquet"
    types = sorted({s.instance_type for s in settings})
    frame = None
    if cached.exists() and not config.refresh:
        try:
            frame = pd.read_parquet(cached)
        except Exception as exc:  # a torn or foreign file is measured again, not trusted
            log(f"profile cache {cached} unreadable ({type(exc).__name__}); measuring again")
        else:
            have = frame.groupby("instance_type")["batch_size"].max() if len(frame) else pd.Series(dtype=int)
            if sorted(have.index) != types or int(have.min()) < batches[-1]:
                frame = None
    t0 = time.monotonic()
    was_cached = frame is not None
    steal, measured_at = math.nan, None
    if was_cached:
        steal, measured_at = _cached_meta(cached.with_suffix(".json"))
    else:
        log(
            f"profiling {len(instances)} local {model} servers ({', '.join(types)}; {config.contention}, "
            f"{len(batches)} buckets to {batches[-1]}, {config.samples} samples each) ..."
        )
        before = CpuSnapshot.take([], every_process=False)
        frame = measure(instances, model, batches, config)[list(PROFILE_COLUMNS)]
        # What the hypervisor took meanwhile: a profile measured on a stolen host reads slow for good (it is cached).
        steal = outside_cpu(before, CpuSnapshot.take([], every_process=False))["host_steal_percent"]
        measured_at = datetime.now(UTC).isoformat(timespec="seconds")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.tmp{os.getpid()}")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, cached)
        cached.with_suffix(".json").write_text(
            json.dumps(
                {"key": key, "model": model, "servers": [asdict(s) for s in settings], "machine": host}
                | {"config": {k: str(v) for k, v in asdict(config).items()}}
                | {"host_steal_percent": round(steal, 2) if math.isfinite(steal) else None}
                | {"measured_at": measured_at},
                indent=2,
            )
            + "\n"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    info = {
        "key": key,
        "cached": was_cached,
        "cache_path": str(cached),
        "path": str(out),
        "seconds": round(time.monotonic() - t0, 1),
        "machine": host,
        "contention": config.contention,
        "samples": config.samples,
        "max_bucket": int(frame["batch_size"].max()),
        "host_steal_percent": steal if math.isfinite(steal) else None,
        "measured_at": measured_at,  # UTC; None for a cache written before it was recorded
    }
    log(
        f"profile of {', '.join(types)} "
        + (
            f"from the cache ({cached}" + (f", measured {measured_at})" if measured_at else ")")
            if was_cached
            else f"measured in {info['seconds']:.0f} s, cached at {cached}"
        )
        + stolen_text(steal)
    )
    return info


def stolen_text(steal_percent: float) -> str:
    """``; the hypervisor stole X% ...`` where it took more than the self-checks' limit while a profile was measured
    ('' otherwise, or where unknown)."""
    busy = busy_host({"host_steal_percent": steal_percent})
    remedy = "so its latencies may read slow: measure again on a quieter host (--reprofile)"
    return f"; {busy} while it was measured, {remedy}" if busy else ""


def _cached_meta(meta: Path) -> tuple[float, str | None]:
    """The steal a cached profile was measured under and when (UTC), from its sidecar (NaN, None where not
    recorded)."""
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return math.nan, None
    value, when = data.get("host_steal_percent"), data.get("measured_at")
    return (float(value) if isinstance(value, (int, float)) else math.nan), (when if isinstance(when, str) else None)
