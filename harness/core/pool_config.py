"""Pool configurations: which instance types, how many of each, in configuration order."""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import InputError


@dataclass(frozen=True)
class PoolConfig:
    """An instance mix such as ``g4dn.xlarge=2,r5n.large=9``; order is configuration order."""

    counts: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, text: str) -> PoolConfig:
        """Parse ``TYPE=N[,TYPE=N...]``; a bare ``TYPE`` means one instance."""
        counts: dict[str, int] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, sep, num = part.partition("=")
            name = name.strip()
            try:
                n = int(num) if sep else 1
            except ValueError:
                raise InputError(f"{part!r}: count must be an integer (TYPE=N)", field="pool_config") from None
            if not name or n < 0:
                raise InputError(f"{part!r}: expected TYPE=N with N >= 0", field="pool_config")
            counts[name] = counts.get(name, 0) + n
        kept = tuple((t, n) for t, n in counts.items() if n > 0)
        if not kept:
            raise InputError(f"{text!r} has no instances", field="pool_config")
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
