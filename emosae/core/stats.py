"""Uncertainty next to every number: percentile bootstrap intervals, resampling items
(stories, concepts, prompts) with replacement, seeded so a rerun gives the same interval."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

N_BOOT = 2000


def bootstrap_ci(
    stat: Callable[[np.ndarray], float], n_items: int, n_boot: int = N_BOOT, seed: int = 0
) -> list[float]:
    """95% percentile interval of `stat(idx)` over resamples `idx` of range(n_items);
    [nan, nan] with fewer than two items. Resamples where `stat` is nan are dropped."""
    if n_items < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n_items, n_items)) for _ in range(n_boot)], float)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_ci(x: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """95% interval of the mean of `x` (resampling its entries)."""
    x = np.asarray(x, float)
    return bootstrap_ci(lambda i: float(x[i].mean()), len(x), n_boot, seed)


def pearson_ci(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """95% interval of Pearson r between paired `a` and `b` (resampling pairs)."""
    a, b = np.asarray(a, float), np.asarray(b, float)

    def r(i: np.ndarray) -> float:
        if a[i].std() == 0 or b[i].std() == 0:
            return float("nan")
        return float(np.corrcoef(a[i], b[i])[0, 1])

    return bootstrap_ci(r, len(a), n_boot, seed)
