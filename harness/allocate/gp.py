"""A small Gaussian process (RBF kernel) and expected improvement, enough for Bayesian optimisation on a grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.stats import norm

LENGTH_SCALES = (0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0)


def rbf(a: np.ndarray, b: np.ndarray, length_scale: float) -> np.ndarray:
    """Squared-exponential kernel matrix between the rows of ``a`` and ``b`` (unit signal variance)."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    return np.exp(-0.5 * d2 / length_scale**2)


@dataclass(frozen=True, eq=False)
class GaussianProcess:
    """A GP fitted to (x, y) with y standardised; ``predict`` returns mean and sd in y's units."""

    x: np.ndarray
    y_mean: float
    y_std: float
    length_scale: float
    noise: float
    chol: tuple
    alpha: np.ndarray

    @classmethod
    def fit(cls, x, y, *, noise: float = 1e-3, length_scales=LENGTH_SCALES) -> GaussianProcess:
        """Fit on standardised targets, choosing the length scale by marginal likelihood from ``length_scales``."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        mu = float(y.mean())
        sd = float(y.std()) or 1.0
        z = (y - mu) / sd
        best = None
        for ls in length_scales:
            k = rbf(x, x, ls) + (noise + 1e-9) * np.eye(len(x))
            try:
                chol = cho_factor(k, lower=True)
            except np.linalg.LinAlgError:
                continue
            alpha = cho_solve(chol, z)
            loglik = -0.5 * z @ alpha - np.log(np.diag(chol[0])).sum()
            if best is None or loglik > best[0]:
                best = (loglik, ls, chol, alpha)
        _, ls, chol, alpha = best
        return cls(x, mu, sd, ls, noise, chol, alpha)

    def predict(self, xs) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at the rows of ``xs``."""
        xs = np.asarray(xs, dtype=float)
        ks = rbf(xs, self.x, self.length_scale)
        mean = ks @ self.alpha
        v = cho_solve(self.chol, ks.T)
        var = np.clip(1.0 - np.einsum("ij,ji->i", ks, v), 1e-12, None)
        return self.y_mean + self.y_std * mean, self.y_std * np.sqrt(var)


def expected_improvement(mean: np.ndarray, sd: np.ndarray, best: float, xi: float) -> np.ndarray:
    """EI of maximisation over ``best`` with exploration margin ``xi`` (in the same units as ``mean``)."""
    gain = mean - best - xi
    z = gain / sd
    return gain * norm.cdf(z) + sd * norm.pdf(z)
