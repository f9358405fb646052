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
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

# Covariance eigenvalue ratio below which a cloud is treated as lying on a line (rank 1): whitening would
# only amplify rounding noise there.
RANK_ONE_RATIO = 1e-12
# Narrowest angle range the search halves (radians). A range this narrow whose bound still exceeds the best
# count is a tangency of two interval ends (a measure-zero case); the result's tolerance then says so.
MIN_WIDTH = 1e-10
INITIAL_RANGES = 64
# Points x ranges evaluated per vectorised batch (memory: ~8 arrays of this many float64).
BATCH_ELEMENTS = 1 << 21


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


def interval_end(p: np.ndarray, eps: float, side: float) -> np.ndarray:
    """lo(p) (side -1) or hi(p) (side +1) of the open interval of offsets d with (p + d)^2 < eps^2 (1 + d^2),
    for unit-variance p: (-p -/+ eps sqrt(p^2 + a)) / a with a = 1 - eps^2."""
    a = 1.0 - eps * eps
    return (-p + side * eps * np.sqrt(p * p + a)) / a


def interval_ends(p: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(lo(p), hi(p)), see `interval_end`."""
    return interval_end(p, eps, -1.0), interval_end(p, eps, 1.0)


def deepest_point(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise maximum depth of open intervals (lo_i, hi_i) and a d strictly inside that many of them.

    lo, hi: K x n. An interval ending where another starts does not overlap it (open intervals).
    """
    num_rows, n = lo.shape
    lo = np.sort(lo, axis=1)
    hi = np.sort(hi, axis=1)
    # how many intervals end at or before each lo_j (a per-row merge; shifting rows apart to search them in
    # one call would round near-ties)
    ended = np.stack([np.searchsorted(hi[k], lo[k], side="right") for k in range(num_rows)])
    depth = np.arange(1, n + 1)[None, :] - ended
    best = depth.argmax(axis=1)
    rows = np.arange(num_rows)
    # the next event after lo_best: the next start or the first end beyond it
    next_start = np.where(best + 1 < n, lo[rows, np.minimum(best + 1, n - 1)], np.inf)
    next_end = hi[rows, np.minimum(ended[rows, best], n - 1)]
    right = np.minimum(next_start, next_end)
    return depth[rows, best], 0.5 * (lo[rows, best] + right)


def projections(y: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """w(theta).y_i for w = (cos theta, sin theta): K x n."""
    return np.cos(angles)[:, None] * y[None, :, 0] + np.sin(angles)[:, None] * y[None, :, 1]


def counts_at_angles(y: np.ndarray, angles: np.ndarray, eps: float):
    """Exact best count (and its offset d) of a whitened cloud y (n x 2) for each slab angle."""
    return deepest_point(*interval_ends(projections(y, angles), eps))


def projection_range(y: np.ndarray, starts: np.ndarray, widths: np.ndarray):
    """Largest and smallest projection w(theta).y_i of each point over theta in each range (K x n each).

    p(theta) = r cos(theta - phi) has slope r sin(phi - theta): on a range narrower than pi it peaks inside
    iff the slope goes from >= 0 to <= 0, and bottoms inside iff it goes from <= 0 to >= 0; otherwise the
    range's ends are its extremes.
    """
    ends = starts + widths
    at_start, at_end = projections(y, starts), projections(y, ends)
    y_perp = np.stack([y[:, 1], -y[:, 0]], axis=1)  # slope of w(theta).y is w(theta).(y1, -y0)
    slope_start, slope_end = projections(y_perp, starts), projections(y_perp, ends)
    radius = np.hypot(y[:, 0], y[:, 1])[None, :]
    p_max = np.where((slope_start >= 0) & (slope_end <= 0), radius, np.maximum(at_start, at_end))
    p_min = np.where((slope_start <= 0) & (slope_end >= 0), -radius, np.minimum(at_start, at_end))
    return p_max, p_min


def bound_and_relevant(y: np.ndarray, start: float, width: float, eps: float, threshold: int):
    """An upper bound on the best count over every angle in [start, start + width], and which points can
    matter to a count above `threshold` inside it.

    Returns (bound, mask over y's rows or None when bound <= threshold). Any slab in the range holding more
    than `threshold` points has its offset where the widened depth exceeds `threshold`; that region lies
    between the first and just past the last widened start with depth above it, so a point whose widened
    interval misses that span is in no such slab, and the range's sub-ranges can leave it out.
    """
    p_max, p_min = projection_range(y, np.array([start]), np.array([width]))
    lo, hi = interval_end(p_max[0], eps, -1.0), interval_end(p_min[0], eps, 1.0)
    lo_sorted, hi_sorted = np.sort(lo), np.sort(hi)
    depth = np.arange(1, len(y) + 1) - np.searchsorted(hi_sorted, lo_sorted, side="right")
    bound = int(depth.max())
    if bound <= threshold:
        return bound, None
    above = np.flatnonzero(depth > threshold)
    first, last = lo_sorted[above[0]], (lo_sorted[above[-1] + 1] if above[-1] + 1 < len(y) else np.inf)
    return bound, (lo < last) & (hi > first)


def counts_in_blocks(y: np.ndarray, angles: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """`counts_at_angles` over blocks of angles, so that a block holds about BATCH_ELEMENTS projections."""
    rows = max(1, BATCH_ELEMENTS // max(len(y), 1))
    parts = [counts_at_angles(y, angles[i : i + rows], eps) for i in range(0, len(angles), rows)]
    return np.concatenate([c for c, _ in parts]), np.concatenate([d for _, d in parts])


def count_at(y: np.ndarray, angle: float, offset: float, eps: float) -> int:
    """Points of the whitened cloud inside the slab w(angle).y + offset, from the definition."""
    q = y @ np.array([math.cos(angle), math.sin(angle)]) + offset
    return int(np.count_nonzero(q * q < eps * eps * (1.0 + offset * offset)))


@dataclass
class AngleSearch:
    """Branch and bound over slab angles in [0, pi) for a whitened cloud (w and -w give the same slabs).

    Best-first: the range with the largest bound is split next. Each range carries the points that can still
    matter inside it (`bound_and_relevant`), so deep ranges near the maximum work on few points. A range is
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

    def offer(self, angle: float, y_sub: np.ndarray) -> None:
        """Count the best slab at `angle` on a subset of points; a new best is recounted on every point."""
        counts, offsets = counts_at_angles(y_sub, np.array([angle]), self.eps)
        if counts[0] > self.best_count:
            full = count_at(self.y, angle, float(offsets[0]), self.eps)
            if full > self.best_count:
                self.best_count, self.best_angle, self.best_offset = full, angle, float(offsets[0])

    def run(self) -> "AngleSearch":
        width = np.pi / INITIAL_RANGES
        starts = np.arange(INITIAL_RANGES) * width
        counts, offsets = counts_in_blocks(self.y, starts + 0.5 * width, self.eps)
        k = int(counts.argmax())
        self.best_count, self.best_angle, self.best_offset = int(counts[k]), float(starts[k] + 0.5 * width), float(offsets[k])
        everyone = np.arange(len(self.y))
        heap: list = []
        for start in starts:
            self.push(heap, float(start), width, everyone, self.y)
        while heap:
            negative_bound, _, start, width, members = heapq.heappop(heap)
            if -negative_bound <= self.best_count + self.slack:
                self.upper = max(self.upper, -negative_bound)
                continue
            if width < MIN_WIDTH:
                self.upper = max(self.upper, -negative_bound)
                continue
            half = 0.5 * width
            y_sub = self.y[members]
            for child in (start, start + half):
                self.offer(child + 0.5 * half, y_sub)
                self.push(heap, child, half, members, y_sub)
        self.upper = max(self.upper, self.best_count)
        return self

    def push(self, heap: list, start: float, width: float, members: np.ndarray, y_sub: np.ndarray) -> None:
        """Bound a range (members: its points' rows, y_sub = y[members]); queue it with the points that matter
        there, or drop it."""
        self.ranges += 1
        threshold = self.best_count + self.slack
        bound, relevant = bound_and_relevant(y_sub, start, width, self.eps, threshold)
        if relevant is None:
            self.upper = max(self.upper, bound)
            return
        self.upper = max(self.upper, threshold)  # counts <= threshold may have lost points to the selection
        heapq.heappush(heap, (-bound, self.ranges, start, width, members[relevant]))


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
