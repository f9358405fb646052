"""Compiled inner loops of the reducibility indices (numba): S's rotated histograms and the exact M's per-range
bound, each one pass over the points instead of a dozen whole-array temporaries.

The arithmetic is the same, operation for operation, as the definitions they replace (docs/reducibility.md):
- S: rotated coordinates x @ R(theta) = (x0 cos + x1 sin, (-x0) sin + x1 cos); the scan's bins are
  `np.histogram2d`'s (equal bins from the rotated coordinate's min to max, edges k * step + min, a point at
  the max in the last bin, min == max widened by +-0.5), the demo's the fixed grid floor(x * half / bound) +
  half clipped to the edge bins; then the plug-in MI in nats. So the histograms are the reference's counts
  exactly and only the MI's summation order can differ (by rounding).
- exact M: for a range of slab angles, each point's largest and smallest projection, the ends of its widened
  offset interval, and the deepest point of those intervals by one merge of the two sorted end lists
  (`multid.reducibility.exact` explains the bound).

Every kernel releases the GIL (`nogil`), so planes can be searched on several threads; S's kernel spreads its
(cloud, angle) pairs over `numba`'s threads, set from torch's thread count (`threads`).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

# ----------------------------------------------------------------------------------------- threads


def threads() -> int:
    """Threads for the parallel kernels: torch's count (OMP_NUM_THREADS / torch.set_num_threads), at most
    numba's pool."""
    count = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(count)
    return count


# ----------------------------------------------------------------------------------------- S


@numba.njit(cache=True, nogil=True)
def range_bin(value: float, low: float, step: float, scale: float, bins: int) -> int:
    """`np.histogram2d`'s bin of `value` on `bins` equal bins from low (edges k * step + low): guessed
    arithmetically, then fixed against the edges (the guess is off by at most one)."""
    index = math.floor((value - low) * scale)
    index = min(max(index, 0.0), bins - 1.0)
    if value < index * step + low:
        index -= 1.0
    if value >= (index + 1.0) * step + low and index < bins - 1.0:
        index += 1.0
    return int(index)


@numba.njit(cache=True, nogil=True)
def fixed_bin(value: float, half_bins: int, scale: float) -> int:
    """The demo's bin: floor(value * half_bins / bound) + half_bins, clipped to [0, 2 half_bins - 1]."""
    index = math.floor(value * scale) + half_bins
    return int(min(max(index, 0.0), 2.0 * half_bins - 1.0))


@numba.njit(cache=True, nogil=True)
def widened_range(low: float, high: float) -> tuple:
    """numpy's histogram range: min == max is widened by +-0.5."""
    if low == high:
        return low - 0.5, high + 0.5
    return low, high


@numba.njit(cache=True, nogil=True)
def angle_mi_nats(x0, x1, cos: float, sin: float, fixed: bool, bins: int, half_bins: int, bound: float,
                  num_smoothing: float, den_smoothing: float) -> float:
    """Plug-in MI (nats) of the cloud rotated by one angle, on the scan's range grid or the demo's fixed one."""
    n = x0.shape[0]
    side = 2 * half_bins if fixed else bins
    counts = np.zeros((side, side), dtype=np.int64)
    if fixed:
        scale = half_bins / bound
        for i in range(n):
            first = x0[i] * cos + x1[i] * sin
            second = (-x0[i]) * sin + x1[i] * cos
            counts[fixed_bin(first, half_bins, scale), fixed_bin(second, half_bins, scale)] += 1
    else:
        low_a, high_a, low_b, high_b = np.inf, -np.inf, np.inf, -np.inf
        for i in range(n):
            first = x0[i] * cos + x1[i] * sin
            second = (-x0[i]) * sin + x1[i] * cos
            low_a, high_a = min(low_a, first), max(high_a, first)
            low_b, high_b = min(low_b, second), max(high_b, second)
        low_a, high_a = widened_range(low_a, high_a)
        low_b, high_b = widened_range(low_b, high_b)
        step_a, step_b = (high_a - low_a) / bins, (high_b - low_b) / bins
        scale_a, scale_b = bins / (high_a - low_a), bins / (high_b - low_b)
        for i in range(n):
            first = x0[i] * cos + x1[i] * sin
            second = (-x0[i]) * sin + x1[i] * cos
            counts[range_bin(first, low_a, step_a, scale_a, bins), range_bin(second, low_b, step_b, scale_b, bins)] += 1
    p = counts / n
    p_first = np.zeros(side)
    p_second = np.zeros(side)
    for j in range(side):
        for k in range(side):
            p_first[j] += p[j, k]
            p_second[k] += p[j, k]
    total = 0.0
    for j in range(side):
        for k in range(side):
            if p[j, k] > 0:
                total += p[j, k] * math.log((p[j, k] + num_smoothing) / (p_first[j] * p_second[k] + den_smoothing))
    return total


@numba.njit(cache=True, nogil=True, parallel=True)
def mi_nats_stack(x0, x1, offsets, cos, sin, fixed: bool, bins: int, half_bins: int, bound: float,
                  num_smoothing: float, den_smoothing: float):
    """MI (nats) of clouds b = 0..B-1 (points offsets[b]:offsets[b+1] of x0, x1) at every angle: B x A."""
    num_clouds, num_angles = offsets.shape[0] - 1, cos.shape[0]
    out = np.empty((num_clouds, num_angles))
    for task in numba.prange(num_clouds * num_angles):
        b, a = task // num_angles, task % num_angles
        lo, hi = offsets[b], offsets[b + 1]
        out[b, a] = angle_mi_nats(x0[lo:hi], x1[lo:hi], cos[a], sin[a], fixed, bins, half_bins, bound,
                                  num_smoothing, den_smoothing)
    return out


# ----------------------------------------------------------------------------------------- exact M


@numba.njit(cache=True, nogil=True)
def interval_end(p: float, eps: float, side: float) -> float:
    """lo(p) (side -1) or hi(p) (side +1) of the offsets d with (p + d)^2 < eps^2 (1 + d^2), for unit-variance
    projections: (-p -/+ eps sqrt(p^2 + a)) / a with a = 1 - eps^2."""
    a = 1.0 - eps * eps
    return (-p + side * eps * math.sqrt(p * p + a)) / a


@numba.njit(cache=True, nogil=True)
def merged_depths(lo_sorted, hi_sorted):
    """Depth at each sorted start lo_j of the open intervals: (j + 1) minus the intervals ending at or before it
    (an interval ending where another starts does not overlap it); and that ended count."""
    n = lo_sorted.shape[0]
    depth = np.empty(n, dtype=np.int64)
    ended = np.empty(n, dtype=np.int64)
    j = 0
    for k in range(n):
        while j < n and hi_sorted[j] <= lo_sorted[k]:
            j += 1
        depth[k] = k + 1 - j
        ended[k] = j
    return depth, ended


@numba.njit(cache=True, nogil=True)
def deepest(lo_sorted, hi_sorted) -> tuple:
    """(the largest depth of the open intervals, an offset d strictly inside that many), from their sorted
    starts and ends."""
    n = lo_sorted.shape[0]
    depth, ended = merged_depths(lo_sorted, hi_sorted)
    best = int(np.argmax(depth))
    next_start = lo_sorted[best + 1] if best + 1 < n else np.inf  # the next event after lo_best: a start ...
    next_end = hi_sorted[min(ended[best], n - 1)]  # ... or the first end beyond it
    return int(depth[best]), 0.5 * (lo_sorted[best] + min(next_start, next_end))


@numba.njit(cache=True, nogil=True)
def slab_intervals(y0, y1, angle: float, eps: float) -> tuple:
    """Each point's interval (lo, hi) of offsets d that put it inside the slab at `angle` (whitened cloud)."""
    n = y0.shape[0]
    cos, sin = math.cos(angle), math.sin(angle)
    lo = np.empty(n)
    hi = np.empty(n)
    for i in range(n):
        p = cos * y0[i] + sin * y1[i]
        lo[i] = interval_end(p, eps, -1.0)
        hi[i] = interval_end(p, eps, 1.0)
    return lo, hi


def best_slab_at_angle(y0: np.ndarray, y1: np.ndarray, angle: float, eps: float) -> tuple[int, float]:
    """(best count, an offset d strictly inside that many intervals) of the whitened cloud at one slab angle.
    (numpy sorts: its vectorised sort is several times faster than numba's.)"""
    lo, hi = slab_intervals(y0, y1, angle, eps)
    lo.sort()
    hi.sort()
    return deepest(lo, hi)


@numba.njit(cache=True, nogil=True)
def projection_extremes(y0, y1, radius, start: float, width: float) -> tuple:
    """Each point's largest and smallest projection w(theta).y over theta in [start, start + width] (< pi);
    radius: the points' norms.

    p(theta) = r cos(theta - phi) has slope w(theta).(y1, -y0): it peaks inside iff the slope goes from >= 0
    to <= 0, bottoms inside iff from <= 0 to >= 0; otherwise the range's ends are its extremes."""
    n = y0.shape[0]
    end = start + width
    cos_s, sin_s, cos_e, sin_e = math.cos(start), math.sin(start), math.cos(end), math.sin(end)
    p_max = np.empty(n)
    p_min = np.empty(n)
    for i in range(n):
        at_start = cos_s * y0[i] + sin_s * y1[i]
        at_end = cos_e * y0[i] + sin_e * y1[i]
        slope_start = cos_s * y1[i] - sin_s * y0[i]
        slope_end = cos_e * y1[i] - sin_e * y0[i]
        larger = at_start if at_start > at_end else at_end  # (written without branches: several times faster)
        smaller = at_end if at_start > at_end else at_start
        p_max[i] = radius[i] if (slope_start >= 0) & (slope_end <= 0) else larger
        p_min[i] = -radius[i] if (slope_start <= 0) & (slope_end >= 0) else smaller
    return p_max, p_min


@numba.njit(cache=True, nogil=True)
def widened_intervals(y0, y1, radius, start: float, width: float, eps: float) -> tuple:
    """(lo(p_max), hi(p_min)) per point: the union of its offset intervals over the range of slab angles."""
    n = y0.shape[0]
    p_max, p_min = projection_extremes(y0, y1, radius, start, width)
    for i in range(n):
        p_max[i] = interval_end(p_max[i], eps, -1.0)
        p_min[i] = interval_end(p_min[i], eps, 1.0)
    return p_max, p_min


@numba.njit(cache=True, nogil=True)
def relevant_points(lo, hi, lo_sorted, depth, threshold: int):
    """Which widened intervals reach the span from the first to just past the last sorted start whose depth
    exceeds `threshold`: only those points can belong to a slab holding more than `threshold` points."""
    n = lo.shape[0]
    first_k, last_k = -1, -1
    for k in range(n):
        if depth[k] > threshold:
            if first_k < 0:
                first_k = k
            last_k = k
    first = lo_sorted[first_k]
    last = lo_sorted[last_k + 1] if last_k + 1 < n else np.inf
    relevant = np.empty(n, dtype=np.bool_)
    for i in range(n):
        relevant[i] = lo[i] < last and hi[i] > first
    return relevant


@numba.njit(cache=True, nogil=True)
def bucket_bound(lo, hi, threshold: int) -> tuple:
    """A cheap (no sort) upper bound on the depth of the open intervals (lo_i, hi_i), and which of them can hold
    a point of depth above `threshold`.

    The offset axis from min(lo) to max(hi) is cut into 2n buckets; an interval is counted in every bucket from
    the one holding lo to the one holding hi (a monotone map, so also under rounding). Every interval holding
    an offset d is counted in d's bucket, so the largest bucket count bounds the depth, and a point at depth
    above `threshold` lies in a bucket counted above it ("hot"): only intervals reaching a hot bucket can hold
    it. Returns (bound, mask); the mask is empty when bound <= threshold.
    """
    n = lo.shape[0]
    low, high = lo.min(), hi.max()
    buckets = 2 * n
    scale = buckets / (high - low) if high > low else 0.0
    first = np.empty(n, dtype=np.int64)
    last = np.empty(n, dtype=np.int64)
    change = np.zeros(buckets + 1, dtype=np.int64)
    for i in range(n):
        first[i] = min(int((lo[i] - low) * scale), buckets - 1)
        last[i] = min(int((hi[i] - low) * scale), buckets - 1)
        change[first[i]] += 1
        change[last[i] + 1] -= 1
    hot_before = np.zeros(buckets + 1, dtype=np.int64)  # hot buckets among the first b
    count, bound = 0, 0
    for b in range(buckets):
        count += change[b]
        bound = max(bound, count)
        hot_before[b + 1] = hot_before[b] + (1 if count > threshold else 0)
    if bound <= threshold:
        return bound, np.zeros(0, dtype=np.bool_)
    relevant = np.empty(n, dtype=np.bool_)
    for i in range(n):
        relevant[i] = hot_before[last[i] + 1] > hot_before[first[i]]
    return bound, relevant


@numba.njit(cache=True, nogil=True)
def hot_intervals(y0, y1, radius, start: float, width: float, eps: float, threshold: int) -> tuple:
    """The widened intervals of the range's points and their bucketed bound (`bucket_bound`): (bound, lo, hi,
    mask) with lo, hi of the intervals reaching a hot bucket (empty when bound <= threshold)."""
    lo, hi = widened_intervals(y0, y1, radius, start, width, eps)
    bound, hot = bucket_bound(lo, hi, threshold)
    if bound <= threshold:
        return bound, lo[:0], hi[:0], hot
    return bound, lo[hot], hi[hot], hot


@numba.njit(cache=True, nogil=True)
def kept_points(y0, y1, radius, hot, lo, hi, lo_sorted, hi_sorted, threshold: int) -> tuple:
    """The exact depth bound of the hot intervals (sorted ends given) and, when above `threshold`, the columns
    of the points that reach the span where it exceeds `threshold` (`relevant_points`); else empty columns."""
    depth, _ = merged_depths(lo_sorted, hi_sorted)
    bound = depth.max()
    if bound <= threshold:
        return bound, y0[:0], y1[:0], radius[:0]
    relevant = hot.copy()
    relevant[hot] = relevant_points(lo, hi, lo_sorted, depth, threshold)
    return bound, y0[relevant], y1[relevant], radius[relevant]


def range_bound(y0: np.ndarray, y1: np.ndarray, radius: np.ndarray, start: float, width: float, eps: float,
                threshold: int) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """An upper bound on the best count over slab angles in [start, start + width], and (when it exceeds
    `threshold`) the columns (y0, y1, radius) of the points that can belong to a slab there holding more than
    `threshold` points (else None).

    Every count inside the range is at most the depth of the widened intervals (a slab's points are all inside
    theirs). First the bucketed bound (`bucket_bound`, no sort), which drops most ranges and keeps only the
    intervals reaching a hot bucket; then the exact depth of those kept (a slab holding more than `threshold`
    points has them all among the kept, so their depth bounds it), and of them only the ones reaching the
    span where it exceeds `threshold` (`relevant_points`).
    """
    bound, lo, hi, hot = hot_intervals(y0, y1, radius, start, width, eps, threshold)
    if bound <= threshold:
        return int(bound), None
    bound, *kept = kept_points(y0, y1, radius, hot, lo, hi, np.sort(lo), np.sort(hi), threshold)
    return int(bound), (tuple(kept) if bound > threshold else None)


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel once, e.g. before timing."""
    x = np.linspace(-1.0, 1.0, 8)
    mi_nats_stack(x, x[::-1].copy(), np.array([0, 8]), np.ones(1), np.zeros(1), False, 10, 20, 3.0, 0.0, 1e-10)
    best_slab_at_angle(x, x[::-1].copy(), 0.3, 0.1)
    range_bound(x, x[::-1].copy(), np.abs(x), 0.0, 0.1, 0.1, 0)
