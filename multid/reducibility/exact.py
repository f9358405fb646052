"""The epsilon-mixture index M as the paper defines it (section 3): an exact, deterministic maximum.

M_eps(f) = max over (v, c) of the share of points with |v.f + c| < eps * sqrt(mean((v.f + c)^2)).
The gradient engine (`multid.reducibility.indices`) climbs a smooth surrogate from one random start, as the
paper's code does, and stops at a seed-dependent local optimum. This module finds the maximum itself, by
branch and bound over the slab's angle; docs/reducibility.md ("The exact M") derives each step:

1. M is affine-invariant (an invertible affine map sends slabs to slabs and keeps every v.f + c), so the
   cloud is whitened first: every unit direction w then gives projections p_i = w.y_i of mean 0, variance 1.
2. For one direction, writing d for the offset, point i is inside iff (p_i + d)^2 < eps^2 (1 + d^2): a
   quadratic in d with leading coefficient a = 1 - eps^2 > 0 and discriminant/4 = eps^2 (p_i^2 + a) > 0, so
   one open interval (lo(p_i), hi(p_i)) with lo, hi = (-p_i -/+ eps sqrt(p_i^2 + a)) / a. The best d is the
   deepest point of n open intervals: sort, sweep.
3. lo and hi both decrease as p grows (their slope is (-1 -/+ eps p / sqrt(p^2 + a)) / a < 0), so over a
   range of angles the union of a point's intervals lies in (lo(p_max), hi(p_min)) with p_max, p_min its
   extreme projections there. The depth of those widened intervals bounds the count from above on the
   whole range: ranges whose bound cannot beat the best count found are dropped, the rest are halved.
Counts are integers, so the search ends with the exact maximum (tol = 0) or within a stated tolerance.

The per-range work (extreme projections, interval ends, the merge of the sorted ends) is compiled
(`multid.reducibility.kernels`), the sorts are numpy's; `mixture_index_exact_many` searches planes side by side.
"""

from __future__ import annotations

import heapq
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from multid.reducibility import kernels

# Covariance eigenvalue ratio below which a cloud is treated as lying on a line (rank 1): whitening would
# only amplify rounding noise there.
RANK_ONE_RATIO = 1e-12
# Narrowest angle range the search halves (radians). A range this narrow whose bound still exceeds the best
# count is a tangency of two interval ends (a measure-zero case); the result's tolerance then says so.
MIN_WIDTH = 1e-10
INITIAL_RANGES = 64


@dataclass(frozen=True)
class ExactMixtureResult:
    """The maximum share of points in an eps-slab, with the slab that holds it.

    m: count / num_points. v (unit, original coordinates) and c: the slab |v.x + c| < eps * rms(v.x + c),
    the same convention as the gradient engine's (v, c). upper_bound: a certified bound on M (= m when the
    search closed); tol: upper_bound - m, the most by which m can fall short of the maximum (0: exact).
    ranges: angle ranges the search bounded (a measure of its work).
    """

    m: float
    count: int
    num_points: int
    v: np.ndarray
    c: float
    eps: float
    upper_bound: float
    tol: float
    ranges: int


def deepest_point(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise maximum depth of open intervals (lo_i, hi_i) (K x n) and a d strictly inside that many of them.
    An interval ending where another starts does not overlap it (open intervals)."""
    found = [kernels.deepest(np.sort(lo_row), np.sort(hi_row)) for lo_row, hi_row in zip(lo, hi)]
    return np.array([count for count, _ in found]), np.array([offset for _, offset in found])


def coordinates(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernels' inputs: y's two columns and its rows' norms, as contiguous float64 arrays."""
    y = np.asarray(y, dtype=np.float64)
    return np.ascontiguousarray(y[:, 0]), np.ascontiguousarray(y[:, 1]), np.hypot(y[:, 0], y[:, 1])


def counts_at_angles(y: np.ndarray, angles: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact best count (and its offset d) of a whitened cloud y (n x 2) for each slab angle."""
    y0, y1, _ = coordinates(y)
    found = [kernels.best_slab_at_angle(y0, y1, float(angle), eps) for angle in np.atleast_1d(angles)]
    return np.array([count for count, _ in found], dtype=np.int64), np.array([offset for _, offset in found])


def projection_range(y: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest projection w(theta).y_i of each point over theta in each range (K x n each)."""
    found = [kernels.projection_extremes(*coordinates(y), float(s), float(w)) for s, w in zip(starts, widths)]
    return np.stack([p_max for p_max, _ in found]), np.stack([p_min for _, p_min in found])


def bound_and_relevant(y: np.ndarray, start: float, width: float, eps: float, threshold: int):
    """An upper bound on the best count over every angle in [start, start + width], and the rows of y that can
    matter to a count above `threshold` inside it (`kernels.range_bound`; None when bound <= threshold)."""
    bound, kept = kernels.range_bound(*coordinates(y), float(start), float(width), eps, int(threshold))
    return bound, (None if kept is None else np.c_[kept[0], kept[1]])


def count_at(y: np.ndarray, angle: float, offset: float, eps: float) -> int:
    """Points of the whitened cloud inside the slab w(angle).y + offset, from the definition."""
    q = y @ np.array([math.cos(angle), math.sin(angle)]) + offset
    return int(np.count_nonzero(q * q < eps * eps * (1.0 + offset * offset)))


@dataclass
class AngleSearch:
    """Branch and bound over slab angles in [0, pi) for a whitened cloud (w and -w give the same slabs).

    Best-first: the range with the largest bound is split next. Each range carries the points that can still
    matter inside it (`kernels.range_bound`), so deep ranges near the maximum work on few points. A range is
    dropped once its bound is <= best + slack (slack = 0: exact); the certified upper bound on the count is
    the largest of the best count, the dropped bounds, the bounds of ranges too narrow to split (tangencies)
    and the thresholds the point selection used.
    """

    y: np.ndarray
    eps: float
    slack: int
    best_count: int = -1
    best_angle: float = 0.0
    best_offset: float = 0.0
    upper: int = 0
    ranges: int = 0

    def offer(self, angle: float, y0: np.ndarray, y1: np.ndarray) -> None:
        """Count the best slab at `angle` on a subset of points (columns y0, y1); a new best is recounted on
        every point."""
        count, offset = kernels.best_slab_at_angle(y0, y1, angle, self.eps)
        if count > self.best_count:
            full = count_at(self.y, angle, offset, self.eps)
            if full > self.best_count:
                self.best_count, self.best_angle, self.best_offset = full, angle, offset

    def run(self) -> "AngleSearch":
        width = np.pi / INITIAL_RANGES
        starts = np.arange(INITIAL_RANGES) * width
        points = coordinates(self.y)
        for start in starts:  # a first best count: the middle angle of each initial range
            self.offer(float(start + 0.5 * width), points[0], points[1])
        heap: list = []
        for start in starts:
            self.bound_range(heap, float(start), width, points)
        while heap:
            negative_bound, _, start, width, points = heapq.heappop(heap)
            if -negative_bound <= self.best_count + self.slack:
                self.upper = max(self.upper, -negative_bound)
                continue
            if width < MIN_WIDTH:
                self.upper = max(self.upper, -negative_bound)
                continue
            half = 0.5 * width
            for child in (start, start + half):
                kept = self.bound_range(heap, child, half, points)
                if kept is not None:
                    self.offer(child + 0.5 * half, kept[0], kept[1])
        self.upper = max(self.upper, self.best_count)
        return self

    def bound_range(self, heap: list, start: float, width: float, points: tuple[np.ndarray, ...]):
        """Bound a range (points: `coordinates` of those that can matter in it) and queue it with the points
        that matter there (returned), or drop it (None). A range is offered its middle angle only once queued:
        a dropped one cannot beat the best count."""
        self.ranges += 1
        threshold = self.best_count + self.slack
        bound, kept = kernels.range_bound(*points, start, width, self.eps, threshold)
        if kept is None:
            self.upper = max(self.upper, bound)
            return None
        self.upper = max(self.upper, threshold)  # counts <= threshold may have lost points to the selection
        heapq.heappush(heap, (-bound, self.ranges, start, width, kept))
        return kept


def whitening(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, W, rank): y = (x - mean) @ W has identity covariance when rank is 2.

    Rank 1 (points on a line): W's first column maps onto the line's standardised coordinate, second is 0.
    Rank 0 (one repeated point): W = 0.
    """
    mean = points.mean(axis=0)
    centred = points - mean
    cov = centred.T @ centred / len(points)
    values, vectors = np.linalg.eigh(cov)
    if values[1] <= 0.0:
        return mean, np.zeros((2, 2)), 0
    if values[0] <= RANK_ONE_RATIO * values[1]:
        w = np.zeros((2, 2))
        w[:, 0] = vectors[:, 1] / math.sqrt(values[1])
        return mean, w, 1
    return mean, vectors @ np.diag(1.0 / np.sqrt(values)) @ vectors.T, 2


def mixture_index_exact(points, eps: float = 0.1, tol: float = 0.0) -> ExactMixtureResult:
    """M_eps of one N x 2 cloud as the paper defines it: the maximum over every slab, found and certified.

    Deterministic (no seed) and affine-invariant (the same value for the cloud scaled, sheared or moved).
    tol: the share by which the answer may fall short of the maximum, to save time on large clouds;
    tol = 0 gives the exact maximum. The result states the tolerance it guarantees.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 2:
        raise ValueError(f"points must be N x 2 with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("points contain NaN or infinite values")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    if tol < 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    n = len(x)
    mean, w, rank = whitening(x)
    if rank == 0:
        # v.x + c is the same number k for every point, and |k| < eps |k| never holds
        return ExactMixtureResult(m=0.0, count=0, num_points=n, v=np.array([1.0, 0.0]), c=0.0, eps=eps,
                                  upper_bound=0.0, tol=0.0, ranges=0)
    y = (x - mean) @ w
    if rank == 1:
        # every slab not parallel to the line sees the same standardised coordinate; a parallel one sees none
        counts, offsets = counts_at_angles(y, np.zeros(1), eps)
        count, angle, offset, upper, ranges = int(counts[0]), 0.0, float(offsets[0]), int(counts[0]), 1
    else:
        slack = int(math.floor(tol * n))
        search = AngleSearch(y, eps, slack).run()
        count, angle, offset = search.best_count, search.best_angle, search.best_offset
        upper, ranges = search.upper, search.ranges
    # slab w.y + d with y = (x - mean) W  ->  v = W w, c = d - v.mean, scaled to unit v
    v = w @ np.array([math.cos(angle), math.sin(angle)])
    c = offset - float(v @ mean)
    scale = float(np.linalg.norm(v))
    return ExactMixtureResult(m=count / n, count=count, num_points=n, v=v / scale, c=c / scale, eps=eps,
                              upper_bound=upper / n, tol=(upper - count) / n, ranges=ranges)


def slab_share(points, v, c, eps: float = 0.1) -> float:
    """The share of points with |v.x + c| < eps * sqrt(mean((v.x + c)^2)), straight from the definition."""
    q = np.asarray(points, dtype=np.float64) @ np.asarray(v, dtype=np.float64) + float(c)
    return float(np.mean(np.abs(q) < eps * np.sqrt(np.mean(q * q))))


def mixture_index_exact_many(clouds: Sequence, eps: float = 0.1, tol: float = 0.0,
                             workers: int | None = None) -> list[ExactMixtureResult]:
    """`mixture_index_exact` of every cloud, on `workers` threads (default: `kernels.threads()`, torch's thread
    count): the searches' kernels and sorts release the GIL, so planes run side by side. Same results as a loop."""
    workers = workers or kernels.threads()
    if workers == 1 or len(clouds) < 2:
        return [mixture_index_exact(cloud, eps=eps, tol=tol) for cloud in clouds]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda cloud: mixture_index_exact(cloud, eps=eps, tol=tol), clouds))
