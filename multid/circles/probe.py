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
import torch

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


# ------------------------------------------------------------------------------- inverse regression


@dataclass(frozen=True)
class CCircleFit:
    """`find_c_circle` output: the read-out matrix and the R^2 of both regressions."""

    readout: np.ndarray  # [k, 2]: PCA coordinates -> (cos c, sin c) coefficients
    r2_before: float  # constant + one-hot a, b + cos/sin(a - b)
    r2_after: float  # ... + cos/sin(c)


def c_circle_design(infos: np.ndarray, p: int, upstream_one_hot_8: bool = False, with_c: bool = True) -> np.ndarray:
    """Design of the inverse-regression probe: 1, one-hot a, one-hot b, cos/sin(2 pi (a - b) / p)[, cos/sin(2 pi c / p)].

    Upstream hard-coded 8 indicators per variable (values 0..7). That is harmless for weekdays (a in
    0..6, b in 1..7 are all encoded) but for months a, b >= 8 get no indicator, so their offsets leak
    into the other columns. The default uses p indicators of the values mod p (b = p shares the
    indicator of 0, which together with the constant column spans the same space as full one-hots);
    `upstream_one_hot_8=True` restores the 8 columns. The cos/sin of a - b (a *minus* b) is upstream's.
    """
    infos = np.asarray(infos)
    a, b, c = infos[:, 0], infos[:, 1], infos[:, 2]
    width = 8 if upstream_one_hot_8 else p
    a_values, b_values = (a, b) if upstream_one_hot_8 else (a % p, b % p)
    columns = [np.ones((len(infos), 1)), one_hot(a_values, width), one_hot(b_values, width)]
    diff_angle = 2 * np.pi * (a - b) / p
    columns.append(np.stack([np.cos(diff_angle), np.sin(diff_angle)], axis=1))
    if with_c:
        c_angle = 2 * np.pi * c / p
        columns.append(np.stack([np.cos(c_angle), np.sin(c_angle)], axis=1))
    return np.concatenate(columns, axis=1)


def find_c_circle(infos: np.ndarray, coords: np.ndarray, p: int, upstream_one_hot_8: bool = False) -> CCircleFit:
    """Inverse-regression probe for the c circle (upstream `find_c_circle`, spec §3.2).

    Regress the PCA coordinates [n, k] on the design without and then with cos/sin(c); return the
    last two columns of pinv(beta, atol=1e-2) ([k, 2]), the linear read-out from PCA space to the
    (cos c, sin c) coefficients. The caller QR-decomposes it into the intervention plane. Upstream
    also fitted a PCA(8) of the residuals for a plot (which forced k >= 8); that plot is not made here.
    """
    coords = np.asarray(coords, dtype=np.float64)
    before = do_regression(c_circle_design(infos, p, upstream_one_hot_8, with_c=False), coords)
    after = do_regression(c_circle_design(infos, p, upstream_one_hot_8, with_c=True), coords)
    readout = pinv_atol(after.beta)[:, -2:]
    return CCircleFit(readout=readout, r2_before=before.r2, r2_after=after.r2)


# ------------------------------------------------------------------------------- intervention variants
#
# The seven interventions of spec §3.3, as functions of activations (row vectors, torch). Notation:
# mu = mean activation at (layer, token); C = PCA components [k, d] (P = C^T); U = the "undo" basis
# [d, D'] (P unless a caller passes another, e.g. SAE PCs); (Q, R) = the probe's QR factors;
# plane = U Q [d, D] (orthonormal columns); T = E R^-1 turns probe targets E into plane coordinates.
#
# Upstream formulas (default) mix centred and uncentred coordinates (spec §6.5):
#   patch circle:  x' = mu + T[v] plane^T - (mu plane) plane^T
#                  (the plane coordinate of x' is T[v] in *absolute* coordinates, while the probe was
#                  fitted on centred PCA coordinates, so the probe reads E[v] - mu P Q R, not E[v]);
#   patch PCA:     x' = x - (x P) P^T + Z[j] P^T (removes x's uncentred PCA part, adds the donor's
#                  centred coordinates).
# With `centered=True` both are made consistent with the probe:
#   patch circle:  x' = mu + T[v] plane^T                      ((x' - mu) plane = T[v], probe reads E[v])
#   patch PCA:     x' = x - ((x - mu) P) P^T + Z[j] P^T       (x's centred PCA coords become the donor's)
# The other variants are the same in both modes:
#   patch layer:   x' = X[j];  average ablate: x' = mu;
#   zero circle:   x' = x - ((x - mu) plane) plane^T;  zero everything but circle: x' = mu + ((x - mu) plane) plane^T.

VARIANTS = (
    "no_op",
    "patch_circle",
    "patch_pca",
    "patch_layer",
    "average_ablate",
    "zero_circle",
    "zero_everything_but_circle",
)
VARIANT_LABELS = {
    "no_op": "No-op",
    "patch_circle": "Patch circle",
    "patch_pca": "Patch PCA",
    "patch_layer": "Patch layer",
    "average_ablate": "Average ablate",
    "zero_circle": "Zero circle",
    "zero_everything_but_circle": "Zero everything but circle",
}
# Upstream named the same seven arrays before, after, replace_pca, replace_all, average_ablate, zero_circle
# and zero_everything_but_circle.
# Variants whose patched vector depends only on the problem, not on the target value v.
PER_PROBLEM_VARIANTS = ("average_ablate", "zero_circle", "zero_everything_but_circle")
PER_RUN_VARIANTS = ("patch_circle", "patch_pca", "patch_layer")


@dataclass(frozen=True)
class CircleBasis:
    """What the intervention formulas need at one (layer, token), as float32 torch tensors."""

    plane: torch.Tensor  # [d, D] = U Q, orthonormal columns
    r: torch.Tensor  # [D, D]
    target_to_embedding: torch.Tensor  # [p, D] probe targets E of each value
    mean: torch.Tensor  # [d] mu
    pca_components: torch.Tensor  # [k, d] C
    pca_coords: torch.Tensor  # [n, k] centred PCA coordinates Z of every problem
    centered: bool = False

    @classmethod
    def from_arrays(cls, q, r, target_to_embedding, mean, pca_components, pca_coords, undo=None, centered=False, device="cpu"):
        """Build from numpy/torch arrays; `undo` [d, D'] defaults to the PCA basis P = C^T."""
        as_tensor = lambda array: torch.as_tensor(np.asarray(array), dtype=torch.float32, device=device)  # noqa: E731
        components = as_tensor(pca_components)
        undo_matrix = components.T if undo is None else as_tensor(undo)
        return cls(
            plane=undo_matrix @ as_tensor(q),
            r=as_tensor(r),
            target_to_embedding=as_tensor(target_to_embedding),
            mean=as_tensor(mean),
            pca_components=components,
            pca_coords=as_tensor(pca_coords),
            centered=centered,
        )

    def plane_coordinates(self, points: torch.Tensor) -> torch.Tensor:
        """T = points R^-1: plane coordinates [m, D] of probe-target points [m, D]."""
        return torch.linalg.solve(self.r.T, points.to(self.r).T).T


def patch_circle(basis: CircleBasis, points: torch.Tensor) -> torch.Tensor:
    """[m, d] mean activation with its plane component set to the target points (see formulas above)."""
    out = basis.mean + basis.plane_coordinates(points) @ basis.plane.T
    if not basis.centered:
        out = out - (basis.mean @ basis.plane) @ basis.plane.T
    return out


def patch_pca(basis: CircleBasis, x: torch.Tensor, donor_coords: torch.Tensor) -> torch.Tensor:
    """[m, d] x with its PCA-k part replaced by the donor's centred PCA coordinates."""
    components = basis.pca_components
    own = (x - basis.mean) if basis.centered else x
    return x - (own @ components.T) @ components + donor_coords @ components


def patch_layer(donor_x: torch.Tensor) -> torch.Tensor:
    """[m, d] the donor's activation."""
    return donor_x.clone()


def average_ablate(basis: CircleBasis, m: int) -> torch.Tensor:
    """[m, d] copies of the mean activation."""
    return basis.mean.expand(m, -1).clone()


def zero_circle(basis: CircleBasis, x: torch.Tensor) -> torch.Tensor:
    """[m, d] x with its plane component mean-ablated."""
    return x - ((x - basis.mean) @ basis.plane) @ basis.plane.T


def zero_everything_but_circle(basis: CircleBasis, x: torch.Tensor) -> torch.Tensor:
    """[m, d] the mean plus only x's plane component."""
    return basis.mean + ((x - basis.mean) @ basis.plane) @ basis.plane.T


def variant_vectors(
    variant: str, basis: CircleBasis, x: torch.Tensor, donor_x: torch.Tensor, donor_index: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Patched vectors [m, d] of one variant for m runs: own activation x, donor activation, donor index, value v."""
    if variant == "no_op":
        return x.clone()
    if variant == "patch_circle":
        return patch_circle(basis, basis.target_to_embedding[values])
    if variant == "patch_pca":
        return patch_pca(basis, x, basis.pca_coords[donor_index])
    if variant == "patch_layer":
        return patch_layer(donor_x)
    if variant == "average_ablate":
        return average_ablate(basis, x.shape[0])
    if variant == "zero_circle":
        return zero_circle(basis, x)
    if variant == "zero_everything_but_circle":
        return zero_everything_but_circle(basis, x)
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


# ------------------------------------------------------------------------------- which runs

LETTERS = ("a", "c")
C_LETTER_DONOR_B = 3


@dataclass(frozen=True)
class InterventionRuns:
    """The (problem, value) runs of one sweep layer, in upstream order (v outer, problem inner)."""

    problem: np.ndarray  # [R] problem index i
    value: np.ndarray  # [R] target value v
    new_answer: np.ndarray  # [R] c' the intervention should make the model answer
    donor: np.ndarray  # [R] problem index j whose activation is the donor for patch PCA / patch layer

    def __len__(self) -> int:
        return len(self.problem)


def intervention_runs(infos: np.ndarray, p: int, letter: str) -> InterventionRuns:
    """Upstream's run rules (spec §3.3).

    letter a: skip v == a; c' = (b + v) mod p; donor = the problem with a = v and the same b.
    letter c: skip v == c; c' = v; donor = the problem with c = v and b = 3 (upstream's fixed b,
    kept for faithfulness, spec §6.9: the donor differs from problem i in b as well as in c).
    """
    if letter not in LETTERS:
        raise UserError(f"intervene_on must be one of {LETTERS}, got {letter!r}")
    infos = np.asarray(infos)
    index = {tuple(info): i for i, info in enumerate(infos.tolist())}
    problem, value, new_answer, donor = [], [], [], []
    for v in range(p):
        for i, (a, b, c) in enumerate(infos.tolist()):
            if letter == "a":
                if v == a:
                    continue
                target, key = (b + v) % p, (v, b, (v + b) % p)
            else:
                if v == c:
                    continue
                target, key = v, ((v - C_LETTER_DONOR_B) % p, C_LETTER_DONOR_B, v)
            if key not in index:
                raise UserError(f"no donor problem with (a, b, c) = {key} for problem {(a, b, c)} and v = {v}")
            problem.append(i)
            value.append(v)
            new_answer.append(target)
            donor.append(index[key])
    as_int = lambda items: np.array(items, dtype=np.int64)  # noqa: E731
    return InterventionRuns(as_int(problem), as_int(value), as_int(new_answer), as_int(donor))
