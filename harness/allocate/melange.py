"""Mélange-style allocation (Griggs et al., 2024): per-instance rates within QoS, then one integer program.

Step 1, rates. For every (instance type, batch bucket of the trace's mix) the rate one instance sustains while
queries stay within the QoS, found by simulating a queue on the profile's own samples rather than by a formula:
the shipped profiles vary 1-3% within a bucket, and waiting-time formulas (Pollaczek-Khinchine, Kingman's
exponential tail) get the mean of such a queue right but not its p99. Arrivals are Poisson (a dispatcher that
splits one stream over many instances hands each a thinned stream, and thinning tends to Poisson), service times
are drawn as the simulator draws them (a uniform quantile of the bucket's samples), and the same seeded draws serve
every utilization (common random numbers). For each utilization ``u`` of a grid the queue gives the share of a
bucket's queries that miss the QoS, ``viol[u, b]``; the bucket's sustainable rate at utilization u is
``u / mean_service``, and its rate within QoS (the brief's per-instance rate) the largest one whose share of
misses is within the percentile's tail.

Which queue (``MelangeSettings.queue``):

* ``alone`` (Mélange as published): one instance serving the bucket on its own, an M/G/1 queue, by Lindley's
  recursion vectorised (``W_n = Y_n - min_{j<=n} Y_j`` for the running sum ``Y`` of service minus gap).
* ``pooled`` (default): one of the type's ``k`` instances behind the dispatcher's central queue, serving the
  type's whole mix: an M/G/k FCFS queue (Kiefer-Wolfowitz workload vector) whose service is the mix of the
  buckets the type can serve on time, simulated for every pool size k the budget allows; a bucket's misses are
  ``P(W + S_b > QoS)`` over that queue's waits W and the bucket's samples S_b. Measured on the shipped profiles
  (docs/allocator.md), the ``alone`` queue is wrong twice over: a lone r5n.large with 17 ms services on a 25 ms
  target must stay under 10% utilization for p99 (one wait of a service misses), where 13 of them sharing a
  queue run at 92%; and a long query waiting behind a pool of short ones waits for the first of k to finish, not
  behind its own kind. Its picks reach 57-83% of the oracle's best where the pooled queue's reach 100%.

Step 2, the integer program, Mélange's formulation: each instance's load, the sum of the bucket-rate shares it
carries over their per-instance rates, is at most 1. Because the rate depends on the pool size, a type's count is
one-hot, ``z[t, k] = 1`` for k instances; ``y[t, k, u, b]`` is the rate of bucket b sent to type t run at
utilization u (its share of the bucket times the scale; several u for one bucket time-share); ``d[b]`` the rate of
bucket b let miss; ``s`` the scale, total qps:

    max s   s.t.   sum_{t,k,u} y[t, k, u, b] + d[b] = p[b] s                        (every bucket routed)
                   sum_{b,u} y[t, k, u, b] * mean[t, b] / u <= k z[t, k]               (instance loads <= 1)
                   sum y[t, k, u, b] viol[t, k, u, b] + sum_b d[b] <= (1 - P/100) s    (the p-th percentile)
                   sum_k z[t, k] <= 1 (= 1 for a required base type), z binary
                   sum price[t] k z[t, k] <= budget,  k <= cap[t]

With ``tail="bucket"`` (Mélange's rule) each (type, pool size, bucket) is held to its rate within QoS (one u);
with ``tail="shared"`` (default) the percentile's tail is one budget over all queries, as the simulator and the
fluid bound count it: a lone GPU may let 10% of the largest batches miss when they are 5% of the queries. Only the
points on the lower convex hull of (load, misses) per (type, pool size, bucket) enter the program (the others are
never better than a mix of two neighbours).

One program maximising the scale rather than Mélange's cheapest-cost program bisected on the scale: the budget is
the constraint and the throughput the objective here, so one solve is the exact optimum where bisection needs a
dozen and still ends with a bracket; ``y = share x scale`` keeps it linear (a share times a scale variable would
be bilinear). Among the optima a second solve takes the dearest (the budget is spent either way and spare
instances only shorten queues: the convention of the Kairos ranking).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from harness.allocate.space import COST_EPS, AllocationProblem, BatchMix
from harness.core.errors import InputError
from harness.core.profiles import Profile

QUEUES = ("pooled", "alone")
TAILS = ("shared", "bucket")
MIP_GAP = 1e-7  # HiGHS' relative optimality gap: near-ties between configurations go to the tie-break solve
TIE_REL = 1e-6  # a configuration within this share of the best scale is optimal for the tie-break solve
UTILIZATIONS = (
    *(0.01, 0.02, 0.05),  # for services that leave little slack: a queue of one must be almost always empty
    *(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8),
    *(0.85, 0.88, 0.91, 0.94, 0.96, 0.98),  # finer near saturation, where the misses climb fastest
)


@dataclass(frozen=True)
class MelangeSettings:
    """How the rates are found: simulated arrivals, seed, utilization grid, which queue, how the tail is spent."""

    arrivals: int = 8_000
    seed: int = 0
    utilizations: tuple[float, ...] = UTILIZATIONS
    queue: str = "pooled"
    tail: str = "shared"
    dense_pool: int = 4  # pool sizes 1..dense_pool are simulated, then sizes growing by pool_growth, then the cap
    pool_growth: float = 1.4
    warmup_fraction: float = 0.05
    buckets: int = 25  # at most this many batch buckets (neighbouring sizes merge): the program grows with them
    rounds: int = 3  # programs solved at most, each type's queue then serving what the last one routed to it

    def __post_init__(self):
        if self.arrivals < 1000:
            raise InputError(f"{self.arrivals}: must be >= 1000", field="melange_arrivals")
        if self.queue not in QUEUES:
            raise InputError(f"{self.queue!r}: must be one of {', '.join(QUEUES)}", field="melange_queue")
        if self.tail not in TAILS:
            raise InputError(f"{self.tail!r}: must be one of {', '.join(TAILS)}", field="melange_tail")
        u = self.utilizations
        if not u or any(not 0 < x < 1 for x in u) or list(u) != sorted(set(u)):
            raise InputError(f"{u!r}: must be increasing, each in (0, 1)", field="melange_utilizations")
        if self.buckets < 1 or self.rounds < 1:
            raise InputError(f"buckets {self.buckets}, rounds {self.rounds}: must be >= 1", field="melange")
        if self.dense_pool < 1 or self.pool_growth <= 1:
            raise InputError(
                f"dense_pool {self.dense_pool}, pool_growth {self.pool_growth}: need >= 1 and > 1", field="melange"
            )


@dataclass(frozen=True, eq=False)
class RateTable:
    """Per (type, pool size, utilization, bucket): the share of the bucket's queries that miss the QoS."""

    types: tuple[str, ...]
    pool_sizes: tuple[tuple[int, ...], ...]  # per type, ascending from 1
    utilizations: np.ndarray
    mean_ms: np.ndarray  # [type, bucket]: mean service time
    violation: tuple[np.ndarray, ...]  # per type: [pool size index, utilization, bucket]
    probs: np.ndarray  # share of the mix's queries in each bucket
    bucket_max_batch: np.ndarray  # largest batch of the mix in each bucket
    tail: float  # share of queries the percentile lets miss
    settings: MelangeSettings = field(default_factory=MelangeSettings)
    seconds: float = 0.0

    def misses(self, t: int, count: int) -> np.ndarray:
        """``[utilization, bucket]`` misses of type ``t`` in a pool of ``count``: the largest simulated size <= count
        (a smaller pool queues more, so this errs on the safe side)."""
        sizes = self.pool_sizes[t]
        return self.violation[t][int(np.searchsorted(sizes, count, side="right")) - 1]

    def rate_within_qos(self, t: int, count: int = 1) -> np.ndarray:
        """Per bucket, the highest rate (qps) one instance of type ``t`` in a pool of ``count`` serves with at most
        the tail's share of misses; 0 where no utilization of the grid does."""
        ok = self.misses(t, count) <= self.tail
        best = np.where(ok.any(axis=0), self.utilizations[::-1][np.argmax(ok[::-1], axis=0)], 0.0)
        return best / self.mean_ms[t] * 1000.0


@dataclass(frozen=True, eq=False)
class MelangeSolution:
    """The integer program's answer: counts, the scale they serve, each bucket's split and each type's load."""

    counts: tuple[int, ...]
    scale_qps: float
    share: np.ndarray  # [type, bucket]: fraction of the bucket's rate sent to the type (the rest may miss)
    busy: np.ndarray  # per type: instances' worth of service time (mean service x rate)
    cost_per_h: float
    seconds: float


def pool_sizes(cap: int, dense: int, growth: float) -> tuple[int, ...]:
    """1..dense, then sizes growing by ``growth``, then the cap itself."""
    sizes = list(range(1, min(cap, dense) + 1))
    k = sizes[-1]
    while k < cap:
        k = min(cap, max(k + 1, round(k * growth)))
        sizes.append(k)
    return tuple(sizes)


@dataclass(frozen=True, eq=False)
class _Service:
    """One bucket's service time on one type: the profile samples of its sizes, weighted by the mix."""

    values_ms: np.ndarray
    weights: np.ndarray  # sum to 1

    @property
    def mean_ms(self) -> float:
        """Mean service time."""
        return float(self.values_ms @ self.weights)

    def miss_alone(self, qos_ms: float) -> float:
        """Share of queries whose service alone is over ``qos_ms``."""
        return float(self.weights[self.values_ms > qos_ms].sum())

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` service times: a size by the mix, then one of its samples uniformly, as the simulator draws."""
        return self.values_ms[rng.choice(len(self.values_ms), size=n, p=self.weights)]


def _buckets(
    profile: Profile, problem: AllocationProblem, mix: BatchMix, max_buckets: int
) -> tuple[np.ndarray, np.ndarray, list[list[_Service]]]:
    """The mix's sizes in at most ``max_buckets`` buckets of consecutive sizes: each bucket's share of the queries,
    its largest batch, and per type its service (``[type][bucket]``).

    Sizes the profile serves from the same bucket on every type share samples, so they are one bucket; past
    ``max_buckets`` (the program's size grows with them) neighbours merge, an equal number of profile buckets
    each: equal shares of the queries would lump the rare large batches, where the types differ most."""
    rows = []
    for t in problem.types:
        tab = profile.table(t, problem.model)
        idx = np.searchsorted(tab.buckets, mix.sizes, side="left")
        if (idx >= len(tab.buckets)).any():
            raise InputError(
                f"melange: the batch mix has size {int(mix.sizes[idx >= len(tab.buckets)][0])} but {t} is "
                f"profiled for {problem.model} only up to {tab.max_batch}"
            )
        rows.append(idx)
    keys = [tuple(int(r[j]) for r in rows) for j in range(len(mix.sizes))]
    groups = list(dict.fromkeys(keys))  # in size order: the mix's sizes are sorted
    position = {key: g for g, key in enumerate(groups)}
    which = np.array([position[k] for k in keys])
    group_probs = np.bincount(which, weights=mix.probs, minlength=len(groups))
    merged = np.array_split(np.arange(len(groups)), min(max_buckets, len(groups)))
    probs = np.array([group_probs[m].sum() for m in merged])
    largest = np.array([int(mix.sizes[np.isin(which, m)].max()) for m in merged])
    services = []
    for i, t in enumerate(problem.types):
        tab = profile.table(t, problem.model)
        per = []
        for m in merged:
            parts = [np.asarray(tab.samples_ms[groups[g][i]], dtype=float) for g in m]
            weights = np.concatenate([np.full(len(x), group_probs[g] / len(x)) for g, x in zip(m, parts)])
            # A size the mix holds with probability 0 still gets a distribution: its samples, evenly.
            weights = weights if weights.sum() > 0 else np.ones_like(weights)
            per.append(_Service(np.concatenate(parts), weights / weights.sum()))
        services.append(per)
    return probs, largest, services


def alone_misses(
    services: list[_Service], qos_ms: float, utilizations: np.ndarray, rng: np.random.Generator, settings
) -> np.ndarray:
    """``[utilization, bucket]``: share of queries over ``qos_ms`` when one instance serves each bucket on its own."""
    n = settings.arrivals
    gaps = rng.exponential(1.0, n)
    service = np.stack([s.draw(rng, n) for s in services])  # [bucket, arrival]
    mean_ms = np.array([s.mean_ms for s in services])
    skip = int(n * settings.warmup_fraction)
    out = np.empty((len(utilizations), len(services)))
    for j, u in enumerate(utilizations):
        # Lindley: W_{n+1} = max(0, W_n + S_n - G_{n+1}); with Y the running sum of S - G, W_n = Y_n - min_{j<=n} Y_j.
        step = service[:, :-1] - gaps[None, 1:] * (mean_ms / u)[:, None]
        run = np.concatenate([np.zeros((len(service), 1)), np.cumsum(step, axis=1)], axis=1)
        wait = run - np.minimum.accumulate(run, axis=1)
        out[j] = np.mean(wait[:, skip:] + service[:, skip:] > qos_ms, axis=1)
    return out


def pooled_waits_ms(
    service_ms: list[np.ndarray], sizes: list[tuple[int, ...]], utilizations: np.ndarray, gaps: np.ndarray
) -> list[np.ndarray]:
    """Waits of an M/G/k FCFS queue per (type, pool size k, utilization): ``[size, utilization, arrival]`` per type.

    One loop over the arrivals steps every (type, k, utilization) at once: each row keeps its k servers'
    remaining work (unused servers of a smaller pool hold infinity), the arrival waits for the least-loaded one
    and adds its service there, then the gap to the next arrival drains every server."""
    rows = [(t, k, u) for t, ks in enumerate(sizes) for k in ks for u in utilizations]
    width = max(k for ks in sizes for k in ks)
    n = len(gaps)
    row_type = np.array([t for t, _, _ in rows])
    service = np.stack(service_ms)  # [type, arrival]
    mean_ms = service.mean(axis=1)
    scale = np.array([mean_ms[t] / (u * k) for t, k, u in rows])  # ms per unit gap at that utilization
    work = np.zeros((len(rows), width))
    for r, (_, k, _) in enumerate(rows):
        work[r, k:] = np.inf
    waits = np.empty((len(rows), n))
    index = np.arange(len(rows))
    for i in range(n):
        least = work.argmin(axis=1)
        waits[:, i] = work[index, least]
        work[index, least] += service[row_type, i]
        work -= (gaps[i] * scale)[:, None]
        np.maximum(work, 0.0, out=work)
    out, r = [], 0
    for ks in sizes:
        m = len(ks) * len(utilizations)
        out.append(waits[r : r + m].reshape(len(ks), len(utilizations), n))
        r += m
    return out


def _misses_given_waits(waits_ms: np.ndarray, services: list[_Service], qos_ms: float) -> np.ndarray:
    """``[..., bucket]``: P(W + S_b > QoS) with W the given waits (last axis) and S_b each bucket's service."""
    flat = np.sort(waits_ms.reshape(-1, waits_ms.shape[-1]), axis=1)
    width = max(len(s.values_ms) for s in services)
    slack = np.full((len(services), width), -np.inf)
    weight = np.zeros((len(services), width))
    for b, s in enumerate(services):
        slack[b, : len(s.values_ms)] = qos_ms - s.values_ms
        weight[b, : len(s.values_ms)] = s.weights
    out = np.empty((len(flat), len(services)))
    for r, w in enumerate(flat):
        # P(W > slack); a sample whose service alone misses (slack < 0) misses whatever the wait.
        over = 1.0 - np.searchsorted(w, slack.ravel(), side="right") / len(w)
        out[r] = (over.reshape(slack.shape) * weight).sum(axis=1)
    return out.reshape(*waits_ms.shape[:-1], len(services))


def instance_rates(
    profile: Profile,
    problem: AllocationProblem,
    mix: BatchMix,
    settings: MelangeSettings | None = None,
    pool_mix: np.ndarray | None = None,
) -> RateTable:
    """Simulate the queues of the module docstring and tabulate each (type, pool size, utilization, bucket)'s misses
    (``pool_mix[type, bucket]``: what each type's pooled queue serves, by default every bucket it can serve)."""
    settings = settings or MelangeSettings()
    t0 = time.perf_counter()
    probs, largest, services = _buckets(profile, problem, mix, settings.buckets)
    mean_ms = np.array([[s.mean_ms for s in per] for per in services])
    tail = 1.0 - problem.percentile / 100.0
    utilizations = np.asarray(settings.utilizations, dtype=float)
    rng = np.random.default_rng(settings.seed)
    if settings.queue == "alone":
        sizes = [(1,)] * len(problem.types)
        violation = [alone_misses(per, problem.qos_ms, utilizations, rng, settings)[None] for per in services]
    else:
        sizes = [pool_sizes(max(cap, 1), settings.dense_pool, settings.pool_growth) for cap in problem.max_counts]
        n = settings.arrivals
        gaps = rng.exponential(1.0, n)
        drawn = []
        for i, per in enumerate(services):
            # The type's pool serves what it was routed, else the buckets it serves on time when idle, in the
            # mix's proportions.
            ok = np.array([s.miss_alone(problem.qos_ms) <= tail for s in per])
            share = probs * ok if (probs * ok).sum() > 0 else probs
            if pool_mix is not None and pool_mix[i].sum() > 0:
                share = pool_mix[i]
            pool = _Service(
                np.concatenate([s.values_ms for s in per]),
                np.concatenate([s.weights * w for s, w in zip(per, share / share.sum())]),
            )
            drawn.append(pool.draw(rng, n))
        skip = int(n * settings.warmup_fraction)
        waits = pooled_waits_ms(drawn, sizes, utilizations, gaps)
        violation = [_misses_given_waits(w[..., skip:], per, problem.qos_ms) for w, per in zip(waits, services)]
    return RateTable(
        problem.types,
        tuple(tuple(s) for s in sizes),
        utilizations,
        mean_ms,
        tuple(violation),
        probs,
        largest,
        tail,
        settings,
        time.perf_counter() - t0,
    )


def _hull(loads: np.ndarray, misses: np.ndarray) -> list[int]:
    """Indices of the points worth routing to: the lower convex hull of (load per qps, misses), with letting the
    queries miss (load 0, misses 1) as the hull's left end, which is itself left out."""
    order = sorted(range(len(loads)), key=lambda j: (loads[j], misses[j]))
    chain: list[tuple[float, float, int]] = [(0.0, 1.0, -1)]
    for j in order:
        x, y = float(loads[j]), float(misses[j])
        if y >= chain[-1][1]:
            continue  # no fewer misses for more load: dominated
        while len(chain) >= 2:
            (x1, y1, _), (x2, y2, _) = chain[-2], chain[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) <= 0:  # the middle point lies on or above the chord
                chain.pop()
            else:
                break
        chain.append((x, y, j))
    return [j for _, _, j in chain[1:]]


def _points(rates: RateTable, t: int, count: int) -> list[tuple[int, float, float]]:
    """(bucket, instance-load per qps, share of misses) of every operating point of ``count`` instances of ``t``."""
    misses = rates.misses(t, count)
    out = []
    for b in range(len(rates.probs)):
        loads = rates.mean_ms[t, b] / rates.utilizations / 1000.0
        if rates.settings.tail == "bucket":
            ok = np.flatnonzero(misses[:, b] <= rates.tail)
            chosen = [int(ok[-1])] if ok.size else []
        else:
            chosen = _hull(loads, misses[:, b])
        out += [(b, float(loads[j]), float(misses[j, b])) for j in chosen]
    return out


def melange_solve(problem: AllocationProblem, rates: RateTable) -> MelangeSolution:
    """The integer program of the module docstring: the counts that serve the largest scale under budget and caps."""
    sol = _solve(problem, rates)
    if not sol.scale_qps > 0:
        raise InputError(
            f"melange: no configuration under ${problem.budget_per_h:g}/h serves any rate within "
            f"{problem.qos_ms:g} ms at p{problem.percentile:g}"
        )
    return sol


def _solve(problem: AllocationProblem, rates: RateTable) -> MelangeSolution:
    t0 = time.perf_counter()
    if rates.types != problem.types:
        raise InputError(f"melange: the rate table's types {rates.types} are not the problem's {problem.types}")
    n_t, n_b = len(problem.types), len(rates.probs)
    low = [1 if problem.require_base and t == problem.base_index else 0 for t in range(n_t)]
    if low[problem.base_index] > problem.max_counts[problem.base_index]:
        raise InputError(f"melange: the base type {problem.base_type} is required but capped at 0")
    # One binary per (type, count >= 1) within the cap and affordable on its own.
    options = [
        (t, k)
        for t in range(n_t)
        for k in range(1, problem.max_counts[t] + 1)
        if k * problem.prices_per_h[t] <= problem.budget_per_h + COST_EPS
    ]
    points = [(o, b, load, miss) for o, (t, k) in enumerate(options) for b, load, miss in _points(rates, t, k)]
    n_z, n_y = len(options), len(points)
    y0, d0 = n_z, n_z + n_y
    scale = d0 + n_b
    n_var = scale + 1
    load_row, choice_row = n_b, n_b + n_z
    budget_row, tail_row = choice_row + n_t, choice_row + n_t + 1
    entries: list[tuple[int, int, float]] = []
    for j, (o, b, load, miss) in enumerate(points):
        entries += [(b, y0 + j, 1.0), (load_row + o, y0 + j, load)]
        if miss > 0:
            entries.append((tail_row, y0 + j, miss))
    for b in range(n_b):
        entries += [(b, d0 + b, 1.0), (b, scale, -float(rates.probs[b])), (tail_row, d0 + b, 1.0)]
    for o, (t, k) in enumerate(options):
        price = problem.prices_per_h[t]
        entries += [(load_row + o, o, -float(k)), (choice_row + t, o, 1.0), (budget_row, o, k * price)]
    entries.append((tail_row, scale, -rates.tail))
    r, c, v = (list(col) for col in zip(*entries))
    a = coo_matrix((v, (r, c)), shape=(tail_row + 1, n_var)).tocsr()
    b_lo = np.concatenate([np.zeros(n_b), np.full(n_z, -np.inf), low, [-np.inf, -np.inf]])
    b_hi = np.concatenate([np.zeros(n_b), np.zeros(n_z), np.ones(n_t), [problem.budget_per_h + COST_EPS, 0.0]])
    constraint = LinearConstraint(a, b_lo, b_hi)
    integrality = np.zeros(n_var)
    integrality[:n_z] = 1
    upper = np.full(n_var, np.inf)
    upper[:n_z] = 1.0
    solver = {"mip_rel_gap": MIP_GAP}

    objective = np.zeros(n_var)
    objective[scale] = -1.0
    res = milp(objective, integrality=integrality, bounds=Bounds(0, upper), constraints=constraint, options=solver)
    if res.status != 0 or res.x is None:
        # Infeasible: the required base instance alone is over the budget (enumerate_configs says the same).
        raise InputError(f"melange: no configuration fits the budget ${problem.budget_per_h:g}/h ({res.message})")
    if not res.x[scale] > 0:
        return MelangeSolution(tuple(low), 0.0, np.zeros((n_t, n_b)), np.zeros(n_t), problem.cost_per_h(low), 0.0)
    # Tie-break: of the configurations serving (about) the best scale, the dearest.
    floor = np.zeros(n_var)
    floor[scale] = float(res.x[scale]) * (1.0 - TIE_REL)
    spend = np.zeros(n_var)
    for o, (t, k) in enumerate(options):
        spend[o] = -k * problem.prices_per_h[t]
    tie = milp(spend, integrality=integrality, bounds=Bounds(floor, upper), constraints=constraint, options=solver)
    x = tie.x if tie.status == 0 and tie.x is not None else res.x
    counts = [0] * n_t
    for o, (t, k) in enumerate(options):
        if x[o] > 0.5:
            counts[t] = k
    s = float(x[scale])
    share = np.zeros((n_t, n_b))
    busy = np.zeros(n_t)
    for j, (o, b, _, _) in enumerate(points):
        t = options[o][0]
        share[t, b] += max(x[y0 + j], 0.0) / (rates.probs[b] * s) if rates.probs[b] > 0 else 0.0
        busy[t] += max(x[y0 + j], 0.0) * rates.mean_ms[t, b] / 1000.0
    return MelangeSolution(tuple(counts), s, share, busy, problem.cost_per_h(counts), time.perf_counter() - t0)


@dataclass(frozen=True, eq=False)
class MelangeResult:
    """The answer, the rate table it was solved on, how many rounds it took, and the time in each step."""

    solution: MelangeSolution
    rates: RateTable
    rounds: int
    queue_seconds: float
    ilp_seconds: float


def melange_allocate(
    profile: Profile, problem: AllocationProblem, mix: BatchMix, settings: MelangeSettings | None = None
) -> MelangeResult:
    """Rates, then the integer program; with the pooled queue, again with each type's queue serving what the last
    program routed to it, until a configuration repeats or ``settings.rounds`` programs have been solved.

    A type's first queue serves every bucket it can serve on time, in the mix's proportions; a GPU that the
    program leaves with only the large batches queues on large services instead (the noisy profile of
    docs/allocator.md: the lone GPU's queue is what separates the oracle's best from the fluid bound's)."""
    settings = settings or MelangeSettings()
    pool_mix, seen = None, []
    queue_s = ilp_s = 0.0
    for round_ in range(1, settings.rounds + 1):
        rates = instance_rates(profile, problem, mix, settings, pool_mix)
        sol = melange_solve(problem, rates)
        queue_s, ilp_s = queue_s + rates.seconds, ilp_s + sol.seconds
        if settings.queue == "alone" or sol.counts in seen or round_ == settings.rounds:
            break
        seen.append(sol.counts)
        routed = sol.share * rates.probs[None, :]
        # Types the program left out keep the queue they had.
        pool_mix = routed if pool_mix is None else np.where(routed.sum(axis=1, keepdims=True) > 0, routed, pool_mix)
    return MelangeResult(sol, rates, round_, queue_s, ilp_s)


def model_scale_qps(problem: AllocationProblem, rates: RateTable, counts) -> float:
    """The scale one fixed configuration serves under the same model (the program with its counts pinned)."""
    counts = tuple(int(c) for c in counts)
    if len(counts) != len(problem.types) or min(counts) < 0 or not any(counts):
        raise InputError(f"melange: counts {counts} are not a configuration of {', '.join(problem.types)}")
    # Caps pin the counts, the budget is their cost; more instances never lower the scale, so all are used.
    pinned = AllocationProblem(
        problem.model,
        problem.qos_ms,
        problem.cost_per_h(counts),
        problem.types,
        problem.prices_per_h,
        counts,
        problem.base_type,
        False,
        problem.percentile,
    )
    return _solve(pinned, rates).scale_qps
