"""Circle probes on PCA coordinates (upstream `circle_finding_utils.py` / probing part of §2.2).

The probe: for activations at one (layer, token), take their PCA-k coordinates Z (centred) and fit
Z W ~ Y by least squares (no intercept: Z is centred and the targets are balanced), where Y holds
cos(2 pi x / p), sin(2 pi x / p) and/or the centred linear x - (p-1)/2 of a label x (a or c).
W = Q R (reduced QR) gives Q, an orthonormal basis of the probe plane in PCA coordinates, and R,
so that a desired target t corresponds to Q-coordinates t R^-1. There is no train/test split,
as upstream: probes and interventions use all n problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from multid.errors import UserError

PROBE_TARGETS = ("cos", "sin", "centered_linear")


def check_target_names(names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    if not names:
        raise UserError("choose at least one probe target: --probe_on_cos, --probe_on_sin, --probe_on_centered_linear")
    unknown = [name for name in names if name not in PROBE_TARGETS]
    if unknown:
        raise UserError(f"unknown probe target(s) {unknown}; choose from {', '.join(PROBE_TARGETS)}")
    return names


def probe_targets(values: np.ndarray, p: int, names: Sequence[str]) -> np.ndarray:
    """[n, D] targets for integer labels `values` in 0..p-1."""
    angle = 2 * np.pi * np.asarray(values, dtype=np.float64) / p
    columns = {
        "cos": np.cos(angle),
        "sin": np.sin(angle),
        "centered_linear": np.asarray(values, dtype=np.float64) - (p - 1) / 2,
    }
    return np.stack([columns[name] for name in check_target_names(names)], axis=1)


def target_table(p: int, names: Sequence[str]) -> np.ndarray:
    """[p, D] the targets of every label value (upstream `target_to_embedding`)."""
    return probe_targets(np.arange(p), p, names)


@dataclass(frozen=True)
class CircleProbe:
    """A fitted probe: W = Q R maps PCA coordinates to targets."""

    weights: np.ndarray  # [k, D]
    q: np.ndarray  # [k, D] orthonormal columns
    r: np.ndarray  # [D, D]
    target_names: tuple[str, ...]
    target_to_embedding: np.ndarray  # [p, D]
    r2: np.ndarray  # [D] per target, 1 - MSE / Var
    mae: np.ndarray  # [D]

    @property
    def mean_r2(self) -> float:
        return float(np.mean(self.r2))


def least_squares(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64), rcond=None)[0]


def r2_per_target(y: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """1 - mean squared error / variance of each target column (upstream's per-dim R^2)."""
    variance = np.var(y, axis=0)
    error = np.mean((y - prediction) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(variance > 0, 1 - error / variance, np.nan)


def fit_circle_probe(coords: np.ndarray, values: np.ndarray, p: int, names: Sequence[str] = ("cos", "sin")) -> CircleProbe:
    """Least-squares probe from PCA coordinates [n, k] to the cos/sin/linear targets of `values`."""
    names = check_target_names(names)
    z = np.asarray(coords, dtype=np.float64)
    y = probe_targets(values, p, names)
    weights = least_squares(z, y)
    q, r = np.linalg.qr(weights)
    prediction = z @ weights
    return CircleProbe(
        weights=weights,
        q=q,
        r=r,
        target_names=names,
        target_to_embedding=target_table(p, names),
        r2=r2_per_target(y, prediction),
        mae=np.mean(np.abs(y - prediction), axis=0),
    )


def probe_r2(coords: np.ndarray, values: np.ndarray, p: int, names: Sequence[str] = ("cos", "sin")) -> float:
    """Mean R^2 over the probe targets."""
    return fit_circle_probe(coords, values, p, names).mean_r2


def relabel_null(
    coords: np.ndarray,
    values: np.ndarray,
    p: int,
    names: Sequence[str] = ("cos", "sin"),
    n_permutations: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and 95th percentile of the probe R^2 when the p label values are randomly permuted.

    A control upstream lacks: with p classes and k PCA coordinates, a 2-target least-squares fit
    can place almost any assignment of the p class means on a circle (R^2 stays high when the day
    names are shuffled). Permuting which label value each class gets keeps the class structure and
    destroys only the cyclic order, so R^2 well above this null means the order itself is encoded.
    Permutations are drawn from numpy's default_rng(seed); identity draws are kept (they are rare).
    """
    rng = np.random.default_rng(seed)
    values = np.asarray(values)
    scores = np.array([probe_r2(coords, rng.permutation(p)[values], p, names) for _ in range(n_permutations)])
    return float(scores.mean()), float(np.percentile(scores, 95))


# ------------------------------------------------------------------------------- regression

PINV_ATOL = 1e-2


def pinv_atol(matrix: np.ndarray, atol: float = PINV_ATOL) -> np.ndarray:
    """Pseudo-inverse zeroing singular values <= atol (torch.linalg.pinv(atol=...) semantics, rtol 0)."""
    u, s, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    s_inv = np.where(s > atol, 1.0 / np.where(s > atol, s, 1.0), 0.0)
    return (vt.T * s_inv) @ u.T


@dataclass(frozen=True)
class Regression:
    r2: float  # pooled over all target columns
    residuals: np.ndarray  # [n, k]
    predictions: np.ndarray  # [n, k]
    beta: np.ndarray  # [m, k]


def do_regression(explanatory: np.ndarray, target: np.ndarray, atol: float = PINV_ATOL) -> Regression:
    """Least squares of `target` [n, k] on the columns of `explanatory` [n, m] (upstream `do_regression`).

    beta = pinv(X^T X, atol=1e-2) X^T Y, robust to the rank-deficient one-hot designs used here;
    R^2 is pooled over all output dims: 1 - sum(res^2) / sum((Y - column mean)^2). Upstream also
    always fitted a PCA(8) of the residuals for a plot, which forced k >= 8; that is left to callers.
    """
    x = np.asarray(explanatory, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    beta = pinv_atol(x.T @ x, atol) @ x.T @ y
    predictions = x @ beta
    residuals = y - predictions
    total = np.sum((y - y.mean(axis=0)) ** 2)
    r2 = float(1 - np.sum(residuals**2) / total) if total > 0 else float("nan")
    return Regression(r2, residuals, predictions, beta)


def one_hot(values: np.ndarray, size: int) -> np.ndarray:
    """[n, size] indicator columns of integer `values` (values >= size get no indicator)."""
    values = np.asarray(values)
    return (values[:, None] == np.arange(size)[None, :]).astype(np.float64)
