"""Small statistics shared by the figures and the sweeps."""

from __future__ import annotations

import numpy as np


def t_interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the Student-t confidence interval over the last axis (zero width for n < 2)."""
    from scipy import stats

    samples = np.asarray(samples, dtype=np.float64)
    n = samples.shape[-1]
    mean = samples.mean(axis=-1)
    if n < 2:
        return mean, np.zeros_like(mean)
    sem = samples.std(axis=-1, ddof=1) / np.sqrt(n)
    return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * sem
