"""What a policy believes a query will take on an instance type: profile means, optionally updated online.

Policies never read profiles directly. The table is dense over batch sizes (``ms[type, batch_size]``) so that
one fancy-index gives a whole (queries x instances) latency matrix on the dispatch hot path.
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import InputError
from harness.core.profiles import Profile


class LatencyModel:
    """Mean service time per (instance type, model, batch bucket), seeded from a Profile.

    ``alpha`` > 0 turns on online updates: each observed service time moves its bucket's estimate by an
    exponentially weighted step (``alpha`` is the weight of the new observation).
    """

    def __init__(
        self,
        profile: Profile,
        instance_types: list[str],
        models: list[str],
        *,
        alpha: float = 0.0,
        tail_percentile: float = 99.0,
    ):
        self.instance_types = list(dict.fromkeys(instance_types))
        self.type_index = {t: i for i, t in enumerate(self.instance_types)}
        self.models = list(dict.fromkeys(models))
        self.alpha = float(alpha)
        self.tail_percentile = float(tail_percentile)
        self.max_batch = {m: profile.max_batch(self.instance_types, m) for m in self.models}
        self._ms: dict[str, np.ndarray] = {}
        self._tail: dict[str, np.ndarray] = {}
        self._spans: dict[tuple[int, str], list[list[int]]] = {}
        for model in self.models:
            dense = np.full((len(self.instance_types), self.max_batch[model] + 1), np.inf)
            tail = dense.copy()
            for ti, itype in enumerate(self.instance_types):
                tab = profile.table(itype, model)
                sizes = np.arange(1, self.max_batch[model] + 1)
                idx = np.searchsorted(tab.buckets, sizes, side="left")
                dense[ti, 1:] = tab.mean_ms[idx]
                tail[ti, 1:] = np.array([np.percentile(s, tail_percentile) for s in tab.samples_ms])[idx]
                # Batch sizes sharing a bucket are contiguous (idx is sorted): per batch size, its bucket's slice of
                # the row, so observe() updates the whole bucket with one slice assignment.
                lo = np.searchsorted(idx, idx, "left") + 1
                hi = np.searchsorted(idx, idx, "right") + 1
                self._spans[(ti, model)] = np.concatenate([[[0, 0]], np.stack([lo, hi], axis=1)]).tolist()
            self._ms[model] = dense
            self._tail[model] = tail

    def table_ms(self, model: str) -> np.ndarray:
        """The dense ``[type_index, batch_size]`` table of predicted ms for ``model`` (read-only use)."""
        try:
            return self._ms[model]
        except KeyError:
            raise InputError(f"latency model has no model {model!r} (known: {', '.join(self.models)})") from None

    def tail_ms(self, model: str) -> np.ndarray:
        """Like ``table_ms`` but the bucket's tail (``tail_percentile`` of its samples): a pessimistic estimate."""
        try:
            return self._tail[model]
        except KeyError:
            raise InputError(f"latency model has no model {model!r} (known: {', '.join(self.models)})") from None

    def predict_ms(self, type_index: int, model: str, batch_size: int) -> float:
        """Predicted service time in ms of ``batch_size`` on the type at ``type_index``."""
        return float(self._ms[model][type_index, batch_size])

    def observe(self, type_index: int, model: str, batch_size: int, service_ms: float) -> None:
        """Fold one observed service time into its bucket's estimate (no-op when alpha == 0)."""
        if self.alpha <= 0.0 or not np.isfinite(service_ms):
            return
        table = self._ms.get(model)
        if table is None or not 1 <= batch_size < table.shape[1]:
            return
        lo, hi = self._spans[(type_index, model)][batch_size]
        old = float(table[type_index, batch_size])
        new = old + self.alpha * (service_ms - old)
        # Every batch size served by the same bucket shares the estimate; the tail moves with the mean.
        table[type_index, lo:hi] = new
        self._tail[model][type_index, lo:hi] += new - old

    def largest_batch_within(self, type_index: int, model: str, limit_ms: float) -> int:
        """The largest batch size whose predicted time is <= ``limit_ms`` (0 if none)."""
        row = self._ms[model][type_index, 1:]
        ok = np.nonzero(row <= limit_ms)[0]
        return int(ok[-1] + 1) if len(ok) else 0
