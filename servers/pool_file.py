"""Pool files: a JSON description of running instances (model, and per instance id, URL, type, price, pid).

    {"model": "rm2", "mode": "emulated", "config": "g4dn.xlarge=2,r5n.large=9",
     "instances": [{"id": "g4dn.xlarge-0", "url": "http://127.0.0.1:PORT", "instance_type": "g4dn.xlarge",
                    "usd_per_hour": 0.526, "pid": 1234}, ...]}

``load_pool_file`` reads a (possibly hand-written) pool file whose instances may be anywhere reachable by URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def load_pool_file(path: str | Path, prices: str | Path | dict[str, float] | None = None) -> PoolFile:
    """Read and validate a pool file; ``id`` defaults to ``TYPE-k`` and ``usd_per_hour`` to the catalogue price."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such pool file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON pool file ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object with 'model' and 'instances'")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InputError(f"{path}: missing field 'model' (a model name such as \"rm2\")")
    raw = doc.get("instances")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: missing field 'instances' (a non-empty list)")
    catalogue: dict[str, float] | None = prices if isinstance(prices, dict) else None
    instances: list[Instance] = []
    default_ids = instance_ids(
        [str(item.get("instance_type", "")).strip() if isinstance(item, dict) else "" for item in raw]
    )
    for k, item in enumerate(raw):
        where = f"{path}: instances[{k}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object with 'url' and 'instance_type'")
        for name in ("url", "instance_type"):
            if not isinstance(item.get(name), str) or not item[name].strip():
                raise InputError(f"{where}: missing field {name!r}")
        url = item["url"].strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise InputError(f"{where}: field 'url' must start with http:// or https://, got {url!r}")
        itype = item["instance_type"].strip()
        iid = item.get("id")
        if iid is None:
            iid = default_ids[k]
        elif not isinstance(iid, str) or not iid:
            raise InputError(f"{where}: field 'id' must be a non-empty string")
        price = item.get("usd_per_hour")
        if price is None:
            if catalogue is None:
                catalogue = load_prices(prices if not isinstance(prices, dict) else None)
            price = catalogue.get(itype)  # None: unknown, costs are then unknown
        elif isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise InputError(f"{where}: field 'usd_per_hour' must be a number >= 0, got {price!r}")
        pid = item.get("pid")
        instances.append(
            Instance(iid, url, itype, None if price is None else float(price), pid if isinstance(pid, int) else None)
        )
    dup = sorted({i.id for i in instances if sum(j.id == i.id for j in instances) > 1})
    if dup:
        raise InputError(f"{path}: duplicate instance id(s) {', '.join(dup)}")
    return PoolFile(model, tuple(instances), str(path))
