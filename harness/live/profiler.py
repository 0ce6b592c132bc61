"""Profile capture: measure any running V2 server one query at a time and write the shared profile schema.

For each batch size, ``warmup`` queries are sent and discarded, then ``samples`` are timed end to end on this side
(``time.perf_counter`` around one request on a kept-alive connection). Where the server reports ``compute_ms`` in the
response parameters (this project's model server and emulated instance do; Triton and MLServer do not) that is the
compute time and the rest is load time; elsewhere the whole service time is load time. The transport's own cost is
subtracted unless ``keep_transport``: it is the network's, not the model's, and a dispatcher measures its own round
trips live. That cost is the median round trip of an empty request (``GET /v2/health/ready``) sent after the client
has waited about as long as the query took (``idle_transport``, the default; ``TRANSPORT_GAPS_MS``, interpolated):
on a host whose cores idle between requests the way in and out gets slower the longer they idle. Measured on a 2-core
VM (``benchmarks/reply_path.py``, docs/measurements.md), outside an aiohttp server's handler: 0.33-0.45 ms back to
back, 0.97-1.02 ms for a request the server held 6-20 ms, 0.76-1.02 ms for an empty request sent after the client
waited as long; the back-to-back price left +0.4-0.7 ms a query in every profile (+6-10% at a 6 ms service). Where
the server reports ``compute_ms``, the service is never taken below it. ``idle_transport=False`` subtracts the
back-to-back round trip (the local profiles of ``--mode onnx``, whose simulator has no transport of its own).

Inputs come from the model's spec when it is a built-in model, else from the server's metadata (random values of the
declared datatypes and shapes; integer inputs all zero, valid for any embedding table).
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import InputError
from harness.core.profiles import PROFILE_COLUMNS, Profile
from servers import models, v2

# Waits before the empty requests that price the transport (ms): past ~12 ms the round trip stops growing on the VM
# measured, so longer queries take the last value.
TRANSPORT_GAPS_MS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)


@dataclass(frozen=True)
class CaptureConfig:
    """What to measure: server URL, model, the instance-type label, batch sizes, samples and warm-up per batch."""

    url: str
    model: str
    instance_type: str
    batches: tuple[int, ...] = (10, 100, 1000)
    samples: int = 50
    warmup: int = 5
    timeout_s: float = 60.0
    keep_transport: bool = False
    idle_transport: bool = True  # the empty round trip after a wait as long as the query's, not back to back
    seed: int = 0

    def __post_init__(self):
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise InputError(f"{self.url!r}: expected http://HOST:PORT", field="url")
        if not self.batches or min(self.batches) < 1:
            raise InputError(f"{self.batches}: batch sizes must be >= 1", field="batches")
        if self.samples < 2:
            raise InputError(f"{self.samples}: must be >= 2", field="samples")
        if self.warmup < 0:
            raise InputError(f"{self.warmup}: must be >= 0", field="warmup")
        if not self.instance_type.strip():
            raise InputError("must not be empty", field="instance_type")


def parse_batches(text: str) -> tuple[int, ...]:
    """``START:STOP:STEP`` (inclusive), or a comma list, e.g. ``10:1000:10`` or ``1,10,100``."""
    try:
        if ":" in text:
            start, stop, step = (int(x) for x in text.split(":"))
            if step < 1 or start < 1 or stop < start:
                raise ValueError
            values = range(start, stop + 1, step)
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{text!r}: expected START:STOP:STEP or a comma list of sizes >= 1", field="batches") from None
    out = tuple(sorted(set(values)))
    if not out or out[0] < 1:
        raise InputError(f"{text!r}: expected batch sizes >= 1", field="batches")
    return out


class _Client:
    """One kept-alive HTTP connection to the server."""

    def __init__(self, url: str, timeout_s: float):
        parts = urllib.parse.urlsplit(url)
        self.base = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
        self.url = url

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, body) of one request; a connection error names the URL."""
        try:
            self.conn.request(method, self.base + path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        except OSError as exc:
            self.conn.close()
            raise InputError(f"{self.url}: {type(exc).__name__}: {exc}", field="url") from None

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def _inputs_from_metadata(doc: dict, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs matching a V2 metadata document (integers are zeros: a valid id in any table)."""
    inputs = {}
    for t in doc.get("inputs", []):
        shape = [batch if k == 0 and d in (-1, None) else int(d) for k, d in enumerate(t["shape"])]
        if any(d < 0 for d in shape):
            raise InputError(f"input {t['name']!r} has a variable dimension besides the batch: {t['shape']}")
        dtype = v2.numpy_dtype(t["datatype"])
        inputs[t["name"]] = (
            rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
        )
    if not inputs:
        raise InputError("the server's metadata declares no inputs: give a built-in model name")
    return inputs


def capture(config: CaptureConfig, progress: Callable[[int, int, float], None] = lambda b, n, m: None) -> pd.DataFrame:
    """Measure every batch size; rows of the profile schema (``progress(batch, samples, mean_ms)`` after each)."""
    rng = np.random.default_rng(config.seed)
    client = _Client(config.url, config.timeout_s)
    try:
        status, _, body = client.request("GET", f"/v2/models/{config.model}")
        if status != 200:
            raise InputError(
                f"{config.url}: model {config.model!r} not served (GET /v2/models/{config.model} answered {status}: "
                f"{body[:200].decode('utf-8', 'replace')})",
                field="model",
            )
        meta = json.loads(body)
        spec = models.get_spec(config.model) if config.model in models.MODEL_NAMES else None
        gaps = TRANSPORT_GAPS_MS if config.idle_transport else (0.0,)
        curve = None if config.keep_transport else _transport_curve(client, gaps)
        rows = []
        path = f"/v2/models/{config.model}/infer"
        for batch in config.batches:
            inputs = models.make_inputs(spec, batch, rng) if spec else _inputs_from_metadata(meta, batch, rng)
            enc = v2.encode_infer_request(inputs)
            times = []
            for k in range(config.warmup + config.samples):
                t0 = time.perf_counter()
                status, headers, body = client.request("POST", path, enc.body, dict(enc.headers))
                e2e_ms = (time.perf_counter() - t0) * 1e3
                if status != 200:
                    raise InputError(
                        f"{config.url}: batch {batch} answered {status}: {body[:200].decode('utf-8', 'replace')}",
                        field="batches",
                    )
                if k < config.warmup:
                    continue
                compute = _reported_compute_ms(body, headers)
                # The client idled about as long as the server took: the transport after such a wait.
                transport_ms = 0.0 if curve is None else float(np.interp(e2e_ms - curve[1][0], *curve))
                service = max(0.0, e2e_ms - transport_ms, compute if math.isfinite(compute) else 0.0)
                compute = min(compute, service) if math.isfinite(compute) else 0.0
                times.append(service)
                rows.append((config.instance_type, config.model, batch, compute, service - compute))
            progress(batch, len(times), float(np.mean(times)))
    finally:
        client.close()
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def _transport_curve(client: _Client, gaps_ms: tuple[float, ...], n: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, median round trip of an empty request sent after waiting each gap) on the same connection (ms)."""
    medians = []
    for gap_ms in gaps_ms:
        times = []
        for _ in range(n):
            if gap_ms:
                time.sleep(gap_ms / 1e3)
            t0 = time.perf_counter()
            client.request("GET", "/v2/health/ready")
            times.append((time.perf_counter() - t0) * 1e3)
        medians.append(float(np.median(times)))
    return np.asarray(gaps_ms, dtype=float), np.asarray(medians)


def _reported_compute_ms(body: bytes, headers: dict) -> float:
    """The response's ``compute_ms`` parameter, NaN when the server reports none."""
    length = next((v for k, v in headers.items() if k.lower() == v2.HEADER_LENGTH.lower()), None)
    head = body[: int(length)] if length else body
    try:
        value = (json.loads(head).get("parameters") or {}).get("compute_ms")
        return float(value) if value is not None else math.nan
    except (ValueError, TypeError, AttributeError):
        return math.nan


def merge_into(path: Path, captured: pd.DataFrame) -> pd.DataFrame:
    """``captured`` merged into the profile at ``path`` (if any): its (type, model, batch) rows replace old ones."""
    if path.exists():
        try:
            old = pd.read_parquet(path) if path.suffix.lower() != ".csv" else pd.read_csv(path)
        except Exception as exc:  # pyarrow and pandas raise several types for a file that is not what it says
            raise InputError(f"{path}: cannot read the existing profile ({type(exc).__name__}: {exc})") from None
        Profile.from_frame(old, source=str(path))  # a bad file is an error naming it, not a silent overwrite
        key = ["instance_type", "model", "batch_size"]
        replaced = old.merge(captured[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"] == "both"
        captured = pd.concat([old.loc[~replaced.to_numpy(), list(PROFILE_COLUMNS)], captured], ignore_index=True)
    return captured.sort_values(["instance_type", "model", "batch_size"], kind="stable").reset_index(drop=True)


def keep_busy(url: str, model: str, batch: int, stop, seed: int = 0, timeout_s: float = 60.0) -> int:
    """Send queries of ``batch`` back to back until ``stop`` (a ``threading.Event``) is set; returns how many.

    While other servers on the same host are profiled together, this keeps a finished one as busy as it will be
    near the allowable load, so the last samples of the slower servers see the same contention as the first.
    """
    rng = np.random.default_rng(seed)
    client = _Client(url, timeout_s)
    spec = models.get_spec(model) if model in models.MODEL_NAMES else None
    if spec is None:
        raise InputError(f"{model!r}: keep_busy needs a built-in model", field="model")
    enc = v2.encode_infer_request(models.make_inputs(spec, batch, rng))
    sent = 0
    try:
        while not stop.is_set():
            client.request("POST", f"/v2/models/{model}/infer", enc.body, dict(enc.headers))
            sent += 1
    finally:
        client.close()
    return sent
