import numpy as np

from harness.core.fluid_lp import FluidModel, fluid_prices, fluid_solve


def random_model(rng, n_types=3, n_sizes=12):
    sizes = np.arange(1, n_sizes + 1) * 50.0
    slope = rng.uniform(0.05, 0.5, n_types)
    mean = 2.0 + slope[:, None] * sizes[None, :]
    ok = (mean <= rng.uniform(100, 300)).astype(float)
    probs = rng.dirichlet(np.ones(n_sizes))
    return FluidModel(tuple(f"t{i}" for i in range(n_types)), probs, mean, ok, 0.01)


def test_the_lp_routes_each_size_only_to_its_cheapest_types():
    rng = np.random.default_rng(3)
    for _ in range(20):
        model = random_model(rng)
        counts = rng.integers(1, 6, len(model.types))
        lam, x, price = fluid_prices(model, counts)
        assert (lam, x.tolist()) == (fluid_solve(model, counts)[0], fluid_solve(model, counts)[1].tolist())
        assert np.all(price[np.isfinite(price)] >= -1e-9)
        cheapest = np.min(price, axis=0)
        routed = x > 1e-9 * max(lam, 1.0)
        # Complementary slackness: a size only goes where its price is the lowest.
        assert np.allclose(price[routed], np.broadcast_to(cheapest, price.shape)[routed], rtol=1e-6, atol=1e-9)


def test_a_type_that_never_meets_qos_is_unusable_not_free():
    model = FluidModel(("a", "b"), np.array([1.0]), np.array([[10.0], [10.0]]), np.array([[1.0], [0.0]]), 0.01)
    _, x, price = fluid_prices(model, [1, 1])
    assert x[1, 0] == 0 and np.isinf(price[1, 0])
    assert price[0, 0] > 0
