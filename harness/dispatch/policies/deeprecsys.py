"""DeepRecSys query-size threshold scheduling (Gupta et al., ISCA'20).

Queries larger than a batch-size threshold go to the base (accelerator) instances, the rest to the auxiliary
(CPU) instances; each side serves its share from the central FIFO in arrival order. The base type is the type
fastest at the largest batch every type serves (the GPU), the others are auxiliary.

The threshold is tuned online by DeepRecSys' hill climbing: every ``window`` completions the window's p99 latency
is compared with the previous window's; the threshold keeps moving in the same direction while tail latency
improves, and reverses with a halved step when it worsens.

Tunables: ``threshold`` (initial; default the largest batch that every auxiliary type serves within half the QoS
by the latency model), ``tune`` (True), ``window`` (500 queries), ``step`` (initial step, default a tenth of the
largest batch), ``min_step`` (10), ``lookahead`` (queue depth searched per decision, 256).
"""

from __future__ import annotations

import numpy as np

from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision


class DeepRecSys(BasePolicy):
    """Batch-size threshold between base (GPU) and auxiliary (CPU) instances, hill-climbing tuned."""

    name = "deeprecsys"
    push = False

    def __init__(
        self,
        threshold: int | None = None,
        tune: bool = True,
        window: int = 500,
        step: int | None = None,
        min_step: int = 10,
        lookahead: int = 256,
    ):
        self.initial_threshold = threshold
        self.tune = tune if isinstance(tune, bool) else str(tune).lower() in ("1", "true", "yes")
        self.window = int(window)
        self.initial_step = step
        self.min_step = int(min_step)
        self.lookahead = int(lookahead)

    def bind(self, ctx, instances):
        """Split instances into base and auxiliary and set the initial threshold from the latency model."""
        super().bind(ctx, instances)
        lat = ctx.latency
        model = lat.models[0]
        at_max = lat.table_ms(model)[:, -1]
        self.base_type = int(np.argmin(at_max))
        self.max_batch = lat.max_batch[model]
        aux_types = sorted({inst.type_index for inst in instances} - {self.base_type})
        if self.initial_threshold is not None:
            self.threshold = int(self.initial_threshold)
        elif aux_types:
            self.threshold = min(lat.largest_batch_within(t, model, ctx.qos_ms / 2) for t in aux_types)
        else:
            self.threshold = 0  # homogeneous base pool: everything is "large"
        if not any(inst.type_index == self.base_type for inst in instances):
            self.threshold = self.max_batch  # CPU-only pool: everything is "small"
        self.step = int(self.initial_step or max(self.min_step, self.max_batch // 10))
        self._direction = 1
        self._window: list[float] = []
        self._last_p99 = None
        self.history = [self.threshold]

    def decide(self, now_s, pending, instances):
        """Idle base instances take the oldest large query, idle auxiliary ones the oldest small query."""
        if not pending:
            return NOTHING
        idle_base = [inst for inst in instances if inst.idle and inst.type_index == self.base_type]
        idle_aux = [inst for inst in instances if inst.idle and inst.type_index != self.base_type]
        out = []
        threshold = self.threshold
        for k in range(min(len(pending), self.lookahead)):
            if not idle_base and not idle_aux:
                break
            q = pending[k]
            side = idle_base if q.batch_size > threshold else idle_aux
            if side:
                out.append((q, side.pop(0).index))
        return Decision(out) if out else NOTHING

    def on_complete(self, now_s, query, instance, latency_ms):
        """Hill-climb the threshold on each window's p99 latency."""
        if not self.tune:
            return
        self._window.append(latency_ms)
        if len(self._window) < self.window:
            return
        p99 = float(np.percentile(self._window, 99))
        self._window.clear()
        if self._last_p99 is not None and p99 > self._last_p99:
            self._direction = -self._direction
            self.step = max(self.min_step, self.step // 2)
        self._last_p99 = p99
        self.threshold = int(min(self.max_batch, max(0, self.threshold + self._direction * self.step)))
        self.history.append(self.threshold)
