"""A yardstick for the reducibility indices of one 2-D cloud (a PCA plane of a cluster): where its S and exact M fall
among structureless clouds of the same size and shape, and Benjamini-Hochberg control over many planes.

The null is a Gaussian cloud with the plane's number of points and covariance: no structure beyond its second
moments, so any S or M it reaches is what chance and the estimators' small-sample bias give (docs/reducibility.md,
"A null for S and M"). Which way each index points: a plane is irreducible when S is high (no rotation makes its
coordinates independent), and reducible when M is high (one slab holds a large share). So S is tested in its upper
tail (s_p, and its z-score s_z) and M is reported as a z-score against its null (m_z): M above the Gaussian's does not mean "a mixture"
(a noisy circle's exact M is 0.18-0.23, the Gaussian's 0.10-0.15, two thin lines about 0.53), so read it against
both references.

Cheap by invariance:
- exact M is affine-invariant, so its Gaussian null depends on the number of points alone: one null per n,
  drawn from standard Gaussians and cached;
- S is invariant to rotation, translation and a common scale, but not to the ratio of the two variances (the
  minimum over rotations of a round cloud has more nearly independent angles to choose from: at n = 1,000 the
  null mean is 0.041 bits for a round cloud and 0.052 for a variance ratio of 0.05). Its null is drawn with the
  plane's variance ratio rounded to a grid (`RATIO_GRID`) and cached per (n, grid ratio);
- a plane is tested on a seeded random sample of `calibration_size(n)` of its points: the largest size in
  `CALIBRATION_SIZES` not above n (all n points below the smallest). So a whole scan draws nulls for at most
  nine sizes (not one per distinct n) and never for more than 2,000 points, where a null of 200 exact M would
  cost as much as 200 planes. The price is power on large planes, which have plenty: at 2,000 points a
  noisy circle's S is about 0.78 bits against a round Gaussian null of 0.020 +- 0.002. The sample's own S and M are the
  values tested (`s_bits`, `m_exact` here; `calibration_s`, `calibration_m` in the scan's metrics), beside the
  plane's full-n values.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from multid.reducibility.exact import mixture_index_exact, mixture_index_exact_many
from multid.reducibility.indices import separability_index_batched

NULL_DRAWS = 200
RATIO_GRID = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.003, 0.001)  # smaller / larger variance
CALIBRATION_SIZES = (100, 150, 200, 300, 500, 700, 1000, 1500, 2000)  # points a plane is tested on


@dataclass(frozen=True)
class NullSample:
    """An index on each of `draws` null clouds."""

    values: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def sd(self) -> float:
        return float(self.values.std(ddof=1))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.values, 95))

    def upper_p(self, observed: float) -> float:
        """One-sided p-value of `observed` in the upper tail: (1 + #null >= observed) / (draws + 1)."""
        return float((1 + int((self.values >= observed).sum())) / (len(self.values) + 1))

    def z(self, observed: float) -> float:
        return float((observed - self.mean) / self.sd) if self.sd > 0 else 0.0


@dataclass(frozen=True)
class PlaneCalibration:
    """S and exact M of one plane with their Gaussian nulls (see the module docstring)."""

    n: int  # points of the plane
    sample_n: int  # points tested against the null (`calibration_size(n)`): s_bits and m_exact are theirs
    variance_ratio: float  # smaller / larger variance of the plane
    null_ratio: float  # the grid ratio the S null was drawn with
    s_bits: float
    s_null_mean: float
    s_null_sd: float
    s_null_p95: float
    s_p: float
    s_z: float  # S's z-score against its null: unlike s_p it keeps ordering planes far beyond every null draw
    m_exact: float
    m_null_mean: float
    m_null_sd: float
    m_null_p95: float
    m_z: float
    m_p: float  # upper-tail p of M (how often a Gaussian's slab holds as large a share)
    draws: int

    def record(self) -> dict[str, float]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def variance_ratio(points: np.ndarray) -> float:
    """Smaller over larger eigenvalue of the cloud's covariance (1 = round, 0 = a line)."""
    eig = np.linalg.eigvalsh(np.cov(np.asarray(points, dtype=np.float64).T))
    return float(eig[0] / eig[1]) if eig[1] > 0 else 1.0


def grid_ratio(ratio: float) -> float:
    """The nearest grid ratio in log scale."""
    grid = np.asarray(RATIO_GRID)
    return float(grid[np.argmin(np.abs(np.log(grid) - np.log(max(ratio, 1e-12))))])


def null_clouds(n: int, ratio: float, draws: int, seed: int) -> np.ndarray:
    """[draws, n, 2] Gaussian clouds, unit variance on x and `ratio` on y, seeded by (seed, n, ratio)."""
    rng = np.random.default_rng([seed, n, int(round(ratio * 1e6))])
    clouds = rng.standard_normal((draws, n, 2))
    clouds[..., 1] *= np.sqrt(ratio)
    return clouds


@functools.lru_cache(maxsize=256)
def mixture_null(n: int, eps: float = 0.1, draws: int = NULL_DRAWS, seed: int = 0) -> NullSample:
    """Exact M of `draws` Gaussian clouds of n points: the null of every Gaussian plane of n points."""
    clouds = null_clouds(n, 1.0, draws, seed)
    return NullSample(np.array([result.m for result in mixture_index_exact_many(list(clouds), eps=eps)]))


@functools.lru_cache(maxsize=256)
def separability_null(n: int, ratio: float, draws: int = NULL_DRAWS, seed: int = 0) -> NullSample:
    """S (the scan's estimator) of `draws` Gaussian clouds of n points with this variance ratio."""
    return NullSample(separability_index_batched(torch.from_numpy(null_clouds(n, ratio, draws, seed))).s_bits.numpy())


def calibration_size(n: int) -> int:
    """Points a plane of n points is tested on: the largest of `CALIBRATION_SIZES` not above n (n itself
    below the smallest)."""
    fitting = [size for size in CALIBRATION_SIZES if size <= n]
    return max(fitting) if fitting else n


def calibration_sample(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """`calibration_size(n)` of the points, drawn without replacement (seeded by seed and n), in their order."""
    n = len(points)
    size = calibration_size(n)
    if size == n:
        return points
    rng = np.random.default_rng([seed, n, size])
    return points[np.sort(rng.choice(n, size, replace=False))]


def calibrate_plane(points, eps: float = 0.1, draws: int = NULL_DRAWS, seed: int = 0, *,
                    s_bits: float | None = None, m_exact: float | None = None) -> PlaneCalibration:
    """S and exact M of one N x 2 cloud (of its `calibration_sample` when N > 2,000) against Gaussian clouds of
    as many points and the plane's variance ratio (seeded).

    s_bits, m_exact: the plane's values when already computed (the scan has them), used when the sample is the
    whole plane; else computed here."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 3:
        raise ValueError(f"points must be N x 2 with N >= 3, got shape {x.shape}")
    n = len(x)
    sample = calibration_sample(x, seed)
    ratio = variance_ratio(x)
    null_ratio = grid_ratio(ratio)
    if s_bits is None or len(sample) < n:
        s_bits = float(separability_index_batched(torch.from_numpy(sample[None])).s_bits[0])
    if m_exact is None or len(sample) < n:
        m_exact = mixture_index_exact(sample, eps=eps).m
    s_null = separability_null(len(sample), null_ratio, draws, seed)
    m_null = mixture_null(len(sample), eps, draws, seed)
    return PlaneCalibration(n=n, sample_n=len(sample), variance_ratio=ratio, null_ratio=null_ratio,
                            s_bits=float(s_bits), s_null_mean=s_null.mean, s_null_sd=s_null.sd,
                            s_null_p95=s_null.p95, s_p=s_null.upper_p(s_bits), s_z=s_null.z(s_bits),
                            m_exact=float(m_exact), m_null_mean=m_null.mean, m_null_sd=m_null.sd,
                            m_null_p95=m_null.p95, m_z=m_null.z(m_exact), m_p=m_null.upper_p(m_exact), draws=draws)


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input's order: flagging q <= alpha keeps the
    expected share of false discoveries among the flagged at most alpha (independent or positively dependent
    tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out
