"""Pool configurations: which instance types, how many of each, in configuration order."""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import InputError

# A sanity bound on a parsed mix: a local pool starts one process per instance, a simulation keeps per-instance state;
# a count beyond this is a typo (a missing comma, a pasted number), never a pool.
MAX_INSTANCES = 10_000


@dataclass(frozen=True)
class PoolConfig:
    """An instance mix such as ``g4dn.xlarge=2,r5n.large=9``; order is configuration order."""

    counts: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, text: str) -> PoolConfig:
        """Parse ``TYPE=N[,TYPE=N...]``; a bare ``TYPE`` means one instance. Counts are plain digits (not ``1_0``,
        ``1e3`` or other scripts' digits); types are printable text; at most MAX_INSTANCES instances in all."""
        if not isinstance(text, str):
            raise InputError(f"{text!r}: expected text such as g4dn.xlarge=2,r5n.large=9", field="pool_config")
        counts: dict[str, int] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            shown = part if len(part) <= 60 else part[:57] + "..."
            name, sep, num = part.partition("=")
            name, num = name.strip(), num.strip()
            if sep and not (num.isascii() and num.isdigit()):
                raise InputError(f"{shown!r}: count must be an integer (TYPE=N)", field="pool_config")
            if not name:
                raise InputError(f"{shown!r}: expected TYPE=N with N >= 0", field="pool_config")
            if not name.isprintable():
                raise InputError(f"{shown!r}: the instance type has a control character", field="pool_config")
            # Past MAX_INSTANCES the exact value does not matter, and int() of thousands of digits is slow or refused.
            digits = num.lstrip("0") or "0"
            n = (int(digits) if len(digits) <= 12 else MAX_INSTANCES + 1) if sep else 1
            counts[name] = counts.get(name, 0) + n
            if counts[name] > MAX_INSTANCES:
                raise InputError(f"{shown!r}: more than {MAX_INSTANCES} instances of {name}", field="pool_config")
        kept = tuple((t, n) for t, n in counts.items() if n > 0)
        if not kept:
            raise InputError(f"{text[:60]!r} has no instances", field="pool_config")
        total = sum(n for _, n in kept)
        if total > MAX_INSTANCES:
            raise InputError(f"{text[:60]!r}: {total} instances, at most {MAX_INSTANCES}", field="pool_config")
        return cls(kept)

    @classmethod
    def from_mapping(cls, counts: dict[str, int]) -> PoolConfig:
        """Build from a type -> count mapping (zero counts dropped)."""
        return cls(tuple((t, int(n)) for t, n in counts.items() if n > 0))

    @property
    def instance_types(self) -> list[str]:
        """One entry per instance, in configuration order."""
        return [t for t, n in self.counts for _ in range(n)]

    @property
    def size(self) -> int:
        """Total number of instances."""
        return sum(n for _, n in self.counts)

    def as_dict(self) -> dict[str, int]:
        """Type -> count."""
        return dict(self.counts)

    def cost_per_h(self, prices: dict[str, float]) -> float:
        """Dollars per hour of this mix under ``prices``."""
        missing = [t for t, _ in self.counts if t not in prices]
        if missing:
            raise InputError(f"no price for instance type(s) {', '.join(missing)}")
        return float(sum(prices[t] * n for t, n in self.counts))

    def __str__(self) -> str:
        return ",".join(f"{t}={n}" for t, n in self.counts)


def instance_ids(instance_types: list[str]) -> list[str]:
    """Default instance ids in configuration order: ``TYPE-k``, k counting from 0 per type."""
    seen: dict[str, int] = {}
    ids = []
    for t in instance_types:
        k = seen.get(t, 0)
        seen[t] = k + 1
        ids.append(f"{t}-{k}")
    return ids
