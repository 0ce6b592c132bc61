"""Pool files: a JSON description of running instances (model, and per instance id, URL, type, price, pid).

    {"model": "rm2", "mode": "emulated", "config": "g4dn.xlarge=2,r5n.large=9",
     "instances": [{"id": "g4dn.xlarge-0", "url": "http://127.0.0.1:PORT", "instance_type": "g4dn.xlarge",
                    "usd_per_hour": 0.526, "pid": 1234}, ...]}

``load_pool_file`` reads a (possibly hand-written) pool file whose instances may be anywhere reachable by URL.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.core.errors import InputError
from harness.core.pool_config import PoolConfig, instance_ids
from harness.core.prices import load_prices


@dataclass(frozen=True)
class Instance:
    """One instance of a pool: id, base URL, instance type, price, and the local pid when we started it."""

    id: str
    url: str
    instance_type: str
    usd_per_hour: float | None  # None: no price known (a user's own type); costs are then unknown, not zero
    pid: int | None = None

    def to_json(self) -> dict:
        """The pool-file entry."""
        out = {"id": self.id, "url": self.url, "instance_type": self.instance_type, "usd_per_hour": self.usd_per_hour}
        if self.pid is not None:
            out["pid"] = self.pid
        return out


@dataclass(frozen=True)
class PoolFile:
    """A pool as described by a pool file: the model and its instances."""

    model: str
    instances: tuple[Instance, ...]
    source: str = "<memory>"

    @property
    def cost_per_h(self) -> float:
        """Dollars per hour of all instances (NaN when any price is unknown)."""
        if any(i.usd_per_hour is None for i in self.instances):
            return float("nan")
        return float(sum(i.usd_per_hour for i in self.instances))

    @property
    def config(self) -> PoolConfig:
        """The instance mix, in file order."""
        counts: dict[str, int] = {}
        for i in self.instances:
            counts[i.instance_type] = counts.get(i.instance_type, 0) + 1
        return PoolConfig.from_mapping(counts)


def _url_error(url: str) -> str | None:
    """Why ``url`` cannot be an instance's base URL (http or https, a host, a valid port, no spaces), or None."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "has a space or control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in 0..65535)
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if not parts.hostname:
        return "names no host"
    if parts.query or parts.fragment:
        return "must not have a query or fragment (the V2 paths are appended to it)"
    return None


def _text(value) -> bool:
    """A non-empty printable string (names end up in URLs, records and messages)."""
    return isinstance(value, str) and value.strip() != "" and value.isprintable()


def load_pool_file(path: str | Path, prices: str | Path | dict[str, float] | None = None) -> PoolFile:
    """Read and validate a pool file; ``id`` defaults to ``TYPE-k`` and ``usd_per_hour`` to the catalogue price."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))  # JSON is UTF-8; an editor's BOM is harmless
    except FileNotFoundError:
        raise InputError(f"{path}: no such pool file") from None
    # ValueError: malformed JSON, or an integer of more digits than Python converts; RecursionError: deep nesting.
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"{path}: not a JSON pool file ({detail})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object with 'model' and 'instances'")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InputError(f"{path}: missing field 'model' (a model name such as \"rm2\")")
    if not _text(model) or any(c.isspace() or c in "/?#%" for c in model):
        raise InputError(f"{path}: field 'model' {model[:60]!r} is not a model name (it goes into URL paths)")
    raw = doc.get("instances")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: missing field 'instances' (a non-empty list)")
    catalogue: dict[str, float] | None = prices if isinstance(prices, dict) else None
    instances: list[Instance] = []
    default_ids = instance_ids(
        [
            item["instance_type"].strip() if isinstance(item, dict) and _text(item.get("instance_type")) else ""
            for item in raw
        ]
    )
    for k, item in enumerate(raw):
        where = f"{path}: instances[{k}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object with 'url' and 'instance_type'")
        for name in ("url", "instance_type"):
            if not isinstance(item.get(name), str) or not item[name].strip():
                raise InputError(f"{where}: missing field {name!r}")
        url = item["url"].strip().rstrip("/")
        why = _url_error(url)
        if why:
            raise InputError(f"{where}: field 'url' {why}, got {url[:100]!r}")
        itype = item["instance_type"].strip()
        if not itype.isprintable():
            raise InputError(f"{where}: field 'instance_type' {itype[:60]!r} has a control character")
        iid = item.get("id")
        if iid is None:
            iid = default_ids[k]
        elif not _text(iid):
            raise InputError(f"{where}: field 'id' must be a non-empty string of printable characters")
        price = item.get("usd_per_hour")
        if price is None:
            if catalogue is None:
                catalogue = load_prices(prices if not isinstance(prices, dict) else None)
            price = catalogue.get(itype)  # None: unknown, costs are then unknown
        elif isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= _float(price) < math.inf:
            raise InputError(
                f"{where}: field 'usd_per_hour' must be a number >= 0 (not NaN or infinite), got {str(price)[:40]}"
            )
        pid = item.get("pid")
        pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31 else None
        instances.append(Instance(iid, url, itype, None if price is None else float(price), pid))
    dup = sorted({i.id for i in instances if sum(j.id == i.id for j in instances) > 1})
    if dup:
        raise InputError(f"{path}: duplicate instance id(s) {', '.join(dup)}")
    return PoolFile(model, tuple(instances), str(path))


def _float(value: int | float) -> float:
    """``float(value)``; inf for an integer too large for a float (refused like one)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
