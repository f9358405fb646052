"""The cluster reducibility scan (paper section 4.2): M and S on the PCA planes of every cluster, and its summary.

Per cluster: reconstructions (multid.sae.analysis.reconstructions; the first `sample_limit` firing tokens in corpus
order) -> PCA(min(5, cluster size)) -> for each consecutive pair of components (planes "0-1", "1-2", ...)
the 2-D cloud of PCA coordinates (points with plane norm <= radius dropped, as the original `--radius`) ->
the mixture index M (scan variant: T = 1, hard fraction, eps = --epsilon; and beside it the exact maximum,
`multid.reducibility.mixture_index_exact`, as "mixture_index_exact") and the separability index S
(10 x 10 data-range histograms over 100 angles, bits). All planes of many clusters go through the batched
engine `multid.reducibility.indices.reducibility_batched` as one padded stack (sorted by size so little
padding is wasted); the engine gives every cloud the same numbers alone or in any batch.

Seeding: the original drew M's starting direction unseeded. Here plane p (0-based: "0-1" is p = 0) of every
cluster starts from `initial_directions(1, seed + p)`, i.e. `torch.randn(2)` of a CPU generator seeded with
seed + p (default seed 0), whatever else is in the batch; so one cluster alone, the whole SAE in one run, and
a one-plane-at-a-time loop of `mixture_index(cloud, seed=seed + p)` all give the same M.

Summary (the rebuttal's analysis): planes with M < 0.01 are dropped (the original treats them as failed
optimisations); per cluster the mean M and mean S of the kept planes; the ranking score is the mean of the
list [0] + [(1 - M) * S for kept planes]. The leading 0 is the original's quirk (it shrinks the score of
clusters with few kept planes; clusters with none score 0); it is the default because the published ranking
(and so the choice of clusters in the rebuttal's grid figure) used it; `leading_zero=False` takes the plain
mean of the kept planes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from multid.errors import UserError
from multid.io import load_json
from multid.reducibility import PlaneCalibration, benjamini_hochberg, calibrate_plane, mixture_index_exact, plots
from multid.reducibility.exact import mixture_index_exact_many
from multid.reducibility.indices import (SCAN_MIXTURE, SCAN_SEPARABILITY, CloudIndices, initial_directions, mixture_index,
                                         mixture_index_batched, pad_clouds, separability_index,
                                         separability_index_batched)

MAX_COMPONENTS = 5
MIN_MIXTURE = 0.01
BATCH_POINTS = 1 << 22  # padded points per engine call (about 64 MB of float64 coordinates)


# ----------------------------------------------------------------------------------------- planes


def num_components(cluster_size: int, num_points: int | None = None) -> int:
    """PCA size of the scan: min(5, cluster size) (the original), and at most the number of points."""
    k = min(MAX_COMPONENTS, int(cluster_size))
    return min(k, num_points) if num_points is not None else k


def numerical_rank(singular_values: np.ndarray, rtol: float = 1e-6) -> int:
    """Number of PCA components with singular value > rtol * the largest: the planes beyond the rank of the
    reconstructions (e.g. a cluster whose decoder rows span only 2 dimensions) hold rounding noise only and
    are not scanned (the original scanned them anyway)."""
    s = np.asarray(singular_values, dtype=np.float64)
    return int((s > rtol * s.max()).sum()) if s.size and s.max() > 0 else 0


def plane_key(p: int) -> str:
    return f"{p}-{p + 1}"


def plane_clouds(coords: np.ndarray, radius: float = 0.0) -> list[tuple[int, np.ndarray]]:
    """(plane index p, cloud [n_p, 2]) for consecutive PCA coordinates (p, p + 1), points with norm > radius.

    Planes left with fewer than 2 points, or constant along an axis, are skipped (M and S are undefined)."""
    coords = np.asarray(coords, dtype=np.float64)
    out = []
    for p in range(coords.shape[1] - 1):
        cloud = coords[:, p:p + 2]
        if radius > 0:
            cloud = cloud[np.linalg.norm(cloud, axis=1) > radius]
        if len(cloud) >= 2 and np.ptp(cloud[:, 0]) > 0 and np.ptp(cloud[:, 1]) > 0:
            out.append((p, np.ascontiguousarray(cloud)))
    return out


@dataclass
class PlaneResult(CloudIndices):
    """M and S of one plane, with what its figure row needs; m is the gradient M (the original's), m_exact the
    maximum itself (`multid.reducibility.mixture_index_exact`)."""

    plane: int = 0
    m_exact: float = math.nan

    @property
    def key(self) -> str:
        return plane_key(self.plane)


def plane_start(seed: int, plane: int) -> torch.Tensor:
    """The starting direction of M's optimiser on plane `plane` (see the module docstring)."""
    return initial_directions(1, seed + plane)[0]


def mixture_config(eps: float, steps: int | None = None):
    return dataclasses.replace(SCAN_MIXTURE, eps=float(eps), **({"steps": int(steps)} if steps else {}))


def add_time(timings: dict | None, key: str, start: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def scan_clouds(clouds: Sequence[np.ndarray], planes: Sequence[int], *, eps: float = 0.1, seed: int = 0,
                steps: int | None = None, timings: dict | None = None, device: str | None = None,
                gradient: bool = True) -> list[PlaneResult]:
    """M and S of many clouds through ONE batched engine call each (padded stack + mask), as
    `reducibility_batched` does, and the exact M of each (`mixture_index_exact_many`, planes side by side on
    the kernel threads). `timings` (optional dict) accumulates seconds under "mixture" / "separability" /
    "mixture_exact". `device` (e.g. "cuda"): run the gradient engine there (the stack is moved, results come
    back to the CPU); the start directions are drawn on the CPU either way. gradient=False skips the gradient M
    (m and m_hard are NaN; v and c are the exact slab's)."""
    if not clouds:
        return []
    clouds = [np.asarray(cloud, dtype=np.float64) for cloud in clouds]
    points, mask = pad_clouds(clouds)
    start = time.perf_counter()
    exact = mixture_index_exact_many(clouds, eps=eps)
    add_time(timings, "mixture_exact", start)
    if gradient:
        v0 = torch.stack([plane_start(seed, p) for p in planes])
        on_device = [t.to(device) for t in (points, mask, v0)] if device not in (None, "cpu") else [points, mask, v0]
        start = time.perf_counter()
        mix = mixture_index_batched(on_device[0], on_device[1], config=mixture_config(eps, steps), v0=on_device[2])
        m, m_hard, v, c = (t.detach().cpu().double().numpy() for t in (mix.m, mix.m_hard, mix.v, mix.c))
        add_time(timings, "mixture", start)
    else:
        m = m_hard = np.full(len(clouds), math.nan)
        v, c = np.stack([result.v for result in exact]), np.array([result.c for result in exact])
    start = time.perf_counter()
    sep = separability_index_batched(points, mask, config=SCAN_SEPARABILITY)
    add_time(timings, "separability", start)
    return [PlaneResult(plane=int(p), points=cloud,
                        m=float(m[b]), m_hard=float(m_hard[b]), v=v[b], c=float(c[b]),
                        s_bits=float(sep.s_bits[b]), s_angle=float(sep.angle[b]), mi_bits=sep.mi_bits[b].numpy(),
                        angles=sep.angles.numpy(), m_exact=exact[b].m)
            for b, (p, cloud) in enumerate(zip(planes, clouds))]


def scan_clouds_loop(clouds: Sequence[np.ndarray], planes: Sequence[int], *, eps: float = 0.1, seed: int = 0,
                     steps: int | None = None, timings: dict | None = None) -> list[PlaneResult]:
    """The same numbers one plane at a time (one-cloud engine calls): the reference for tests and benchmarks."""
    out = []
    for p, cloud in zip(planes, clouds):
        start = time.perf_counter()
        mix = mixture_index(np.asarray(cloud, dtype=np.float64), config=mixture_config(eps, steps),
                            v0=plane_start(seed, p))
        add_time(timings, "mixture", start)
        start = time.perf_counter()
        sep = separability_index(np.asarray(cloud, dtype=np.float64), config=SCAN_SEPARABILITY)
        add_time(timings, "separability", start)
        start = time.perf_counter()
        exact = mixture_index_exact(np.asarray(cloud, dtype=np.float64), eps=eps).m
        add_time(timings, "mixture_exact", start)
        out.append(PlaneResult(plane=int(p), points=np.asarray(cloud, dtype=np.float64), m=float(mix.m),
                               m_hard=float(mix.m_hard), v=mix.v.double().numpy(), c=float(mix.c),
                               s_bits=float(sep.s_bits), s_angle=float(sep.angle), mi_bits=sep.mi_bits.numpy(),
                               angles=sep.angles.numpy(), m_exact=exact))
    return out


def scan_many(coords_by_cluster: Mapping[int, np.ndarray], *, radius: float = 0.0, eps: float = 0.1, seed: int = 0,
              steps: int | None = None, batch_points: int = BATCH_POINTS, progress=None,
              timings: dict | None = None, device: str | None = None, gradient: bool = True
              ) -> dict[int, list[PlaneResult]]:
    """Scan the planes of many clusters (cluster id -> PCA coords [n, k]) in padded batches of similar size.

    Planes are sorted by point count and cut into batches of at most `batch_points` padded points, so a
    small cluster is not padded to the largest one. `progress(n)` is called with the planes done per batch.
    """
    items = [(cid, p, cloud) for cid, coords in coords_by_cluster.items() for p, cloud in plane_clouds(coords, radius)]
    items.sort(key=lambda item: (len(item[2]), item[0], item[1]))
    results: dict[int, list[PlaneResult]] = {cid: [] for cid in coords_by_cluster}
    start = 0
    while start < len(items):
        stop = start + 1
        while stop < len(items) and (stop - start + 1) * len(items[stop][2]) <= batch_points:
            stop += 1
        batch = items[start:stop]
        done = scan_clouds([c for _, _, c in batch], [p for _, p, _ in batch], eps=eps, seed=seed, steps=steps,
                           timings=timings, device=device, gradient=gradient)
        for (cid, _, _), res in zip(batch, done):
            results[cid].append(res)
        if progress is not None:
            progress(len(batch))
        start = stop
    for cid in results:
        results[cid].sort(key=lambda r: r.plane)
    return results


CALIBRATION_KEYS = ("s_p", "s_z", "s_null_mean", "s_null_p95", "m_z", "m_p", "m_null_mean", "m_null_p95",
                    "variance_ratio", "sample_n")
# the calibration sample's own S and exact M (the whole plane's when it has at most 100 points or a grid size)
CALIBRATION_VALUES = {"s_bits": "calibration_s", "m_exact": "calibration_m"}


def calibrate_results(results: Sequence[PlaneResult], draws: int, eps: float = 0.1, seed: int = 0
                      ) -> list[PlaneCalibration]:
    """Each plane against its Gaussian null (`calibrate_plane`, given the plane's S and exact M; nulls seeded by
    `seed`, shared by planes of the same sample size and shape)."""
    return [calibrate_plane(r.points, eps=eps, draws=draws, seed=seed, s_bits=r.s_bits, m_exact=r.m_exact)
            for r in results]


def metrics_json(results: Sequence[PlaneResult], calibrations: Sequence[PlaneCalibration] | None = None
                 ) -> dict[str, dict[str, float]]:
    """The original's per-cluster JSON, {"0-1": {"mixture_index": M, "separability_index": S_bits}, ...}, with the
    exact M beside the gradient one ("mixture_index_exact"); with `calibrations` (`calibrate_results`), each
    plane's null (`CALIBRATION_KEYS`, and the tested values as `CALIBRATION_VALUES`)."""
    out = {}
    for index, r in enumerate(results):
        entry = {"mixture_index": r.m, "mixture_index_exact": r.m_exact, "separability_index": r.s_bits}
        if math.isnan(r.m):  # scanned without the gradient engine
            del entry["mixture_index"]
        if calibrations is not None:
            record = calibrations[index].record()
            entry.update({key: record[key] for key in CALIBRATION_KEYS})
            entry.update({name: record[key] for key, name in CALIBRATION_VALUES.items()})
        out[r.key] = entry
    return out


def scan_figure(results: Sequence[PlaneResult], eps: float, title: str = "") -> Figure:
    """Grid planes x 3: cloud + slab + separating axes, histogram of z with M, MI against the angle with S."""
    rows = max(1, len(results))
    fig = Figure(figsize=(8, 2 * rows))
    for i, res in enumerate(results):
        axes = [fig.add_subplot(rows, 3, 3 * i + j + 1) for j in range(3)]
        spread = float(np.std(res.points)) if len(res.points) else 1.0
        plots.draw_cloud(axes[0], res, eps, cross_size=spread or 1.0)
        axes[0].set_ylabel(f"PCs {res.key}")
        plots.draw_slab_histogram(axes[1], res, eps)
        axes[1].set_title(f"exact M = {res.m_exact:.4f}" if math.isnan(res.m) else f"M = {res.m:.4f}", fontsize=9)
        plots.draw_mi_curve(axes[2], res)
        axes[2].set_title(f"S = {res.s_bits:.4f} bits", fontsize=9)
        for ax in axes:
            for text in ax.texts:
                text.set_fontsize(7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- analysis


def read_metrics(path: str | Path) -> dict[str, dict[str, float]]:
    """One cluster's metrics JSON, checked to have the original's keys."""
    data = load_json(path)
    if not isinstance(data, dict) or any(
            not isinstance(v, dict) or "separability_index" not in v or not set(MIXTURE_KEYS.values()) & set(v)
            for v in data.values()):
        raise UserError(f"{path} is not a cluster metrics file ({{'0-1': {{'mixture_index': .., "
                        f"'separability_index': ..}}, ...}})")
    return data


MIXTURE_KEYS = {"gradient": "mixture_index", "exact": "mixture_index_exact"}


def mixture_key(mixture: str) -> str:
    if mixture not in MIXTURE_KEYS:
        raise UserError(f"unknown mixture index {mixture!r}; choose from {', '.join(MIXTURE_KEYS)}")
    return MIXTURE_KEYS[mixture]


def kept_planes(planes: Mapping[str, Mapping[str, float]], min_mixture: float = MIN_MIXTURE,
                mixture: str = "gradient") -> list[tuple[float, float]]:
    """(M, S) of the planes with M >= min_mixture (the original drops M < 0.01), in plane order; M is the
    gradient value (the original's) or the exact maximum."""
    key = mixture_key(mixture)
    if any(key not in values for values in planes.values()):
        other = "exact" if mixture == "gradient" else "gradient"
        why = ("scanned with --mixture exact" if mixture == "gradient" else "scanned before the exact M was recorded")
        raise UserError(f"these scan results have no {key!r} ({why}): rank with --mixture {other}, or rerun the "
                        f"scan")
    order = sorted(planes, key=lambda k: int(k.split("-")[0]))
    return [(float(planes[k][key]), float(planes[k]["separability_index"])) for k in order
            if float(planes[k][key]) >= min_mixture]


def ranking_score(planes: Mapping[str, Mapping[str, float]], min_mixture: float = MIN_MIXTURE,
                  leading_zero: bool = True, mixture: str = "gradient") -> float:
    """mean([0] + [(1 - M) * S for kept planes]) (original), or the plain mean of the kept terms (0 if none)."""
    terms = [(1.0 - m) * s for m, s in kept_planes(planes, min_mixture, mixture)]
    if leading_zero:
        terms = [0.0] + terms
    return float(np.mean(terms)) if terms else 0.0


@dataclass
class ClusterSummary:
    cluster: int
    mean_m: float  # NaN when no plane is kept
    mean_s: float
    kept: int
    score: float


def summarise(metrics: Mapping[int, Mapping[str, Mapping[str, float]]], min_mixture: float = MIN_MIXTURE,
              leading_zero: bool = True, mixture: str = "gradient") -> list[ClusterSummary]:
    """Per cluster: mean M, mean S over kept planes, number kept, ranking score; sorted by cluster id."""
    out = []
    for cid in sorted(metrics):
        kept = kept_planes(metrics[cid], min_mixture, mixture)
        mean_m = float(np.mean([m for m, _ in kept])) if kept else math.nan
        mean_s = float(np.mean([s for _, s in kept])) if kept else math.nan
        out.append(ClusterSummary(int(cid), mean_m, mean_s, len(kept),
                                  ranking_score(metrics[cid], min_mixture, leading_zero, mixture)))
    return out


@dataclass
class CalibratedSummary:
    """A cluster against the Gaussian null (the scan's `--calibrate`): Benjamini-Hochberg over the S p-values of
    every kept plane of the scan, then the cluster's best plane."""

    cluster: int
    best_q: float  # smallest BH-adjusted S p-value over its kept planes (1.0 when none is kept)
    significant: int  # its kept planes with q <= alpha
    s_z: float  # the largest z-score of S against its null over its kept planes (-inf when none is kept)
    m_z: float  # exact M's z-score against its null on that plane (NaN when none is kept)


def calibrated_summaries(metrics: Mapping[int, Mapping[str, Mapping[str, float]]], min_mixture: float = MIN_MIXTURE,
                         mixture: str = "exact", alpha: float = 0.05) -> list[CalibratedSummary]:
    """Per cluster (sorted by id): best BH q of S over its kept planes (M >= min_mixture), how many are
    significant at `alpha`, its largest S z-score and M's z on that plane."""
    key = mixture_key(mixture)
    planes = [(cid, k, values) for cid in sorted(metrics) for k, values in sorted(metrics[cid].items())
              if float(values[key]) >= min_mixture]
    if any("s_p" not in values for _, _, values in planes):
        raise UserError("these scan results have no null (s_p): rerun the scan with --calibrate")
    q = benjamini_hochberg([float(values["s_p"]) for _, _, values in planes])
    best: dict[int, CalibratedSummary] = {int(c): CalibratedSummary(int(c), 1.0, 0, -math.inf, math.nan)
                                          for c in metrics}
    for (cid, _k, values), qv in zip(planes, q):
        entry = best[int(cid)]
        entry.significant += int(qv <= alpha)
        entry.best_q = min(entry.best_q, float(qv))
        if float(values["s_z"]) > entry.s_z:
            entry.s_z, entry.m_z = float(values["s_z"]), float(values["m_z"])
    return [best[int(c)] for c in sorted(metrics)]


def calibrated_ranking(summaries: Sequence[ClusterSummary], calibrated: Sequence[CalibratedSummary]
                       ) -> list[ClusterSummary]:
    """Clusters by best q (smallest first), then by the largest z-score of S against its null (a cloud beyond
    every null draw has the smallest p the draws allow, so q alone ties the clearly structured clusters), then
    cluster id."""
    by_id = {c.cluster: c for c in calibrated}
    return sorted(summaries, key=lambda s: (by_id[s.cluster].best_q, -by_id[s.cluster].s_z, s.cluster))


def rank_comparison(first: Sequence[ClusterSummary], second: Sequence[ClusterSummary], top: int = 5
                    ) -> tuple[float, list[tuple[int, int, int]]]:
    """Spearman correlation of two rankings of the same clusters, and the `top` clusters whose rank moves most
    as (cluster, rank in first, rank in second), ranks from 1."""
    from scipy.stats import spearmanr

    rank_a = {s.cluster: i + 1 for i, s in enumerate(ranking(first))}
    rank_b = {s.cluster: i + 1 for i, s in enumerate(ranking(second))}
    ids = sorted(rank_a)
    rho = float(spearmanr([rank_a[c] for c in ids], [rank_b[c] for c in ids]).statistic) if len(ids) > 1 else 1.0
    moves = sorted(((c, rank_a[c], rank_b[c]) for c in ids), key=lambda t: (-abs(t[1] - t[2]), t[0]))
    return rho, moves[:top]


def ranking(summaries: Sequence[ClusterSummary]) -> list[ClusterSummary]:
    """Clusters by score, highest first (ties: smaller cluster id first)."""
    return sorted(summaries, key=lambda s: (-s.score, s.cluster))


def summary_figure(summaries: Sequence[ClusterSummary], named: Mapping[int, str],
                   title: str = "GPT-2 Mixture Index vs Separability Index") -> Figure:
    """Mean M (x, inverted: less mixture to the right) against mean S (y) per cluster; named clusters in orange
    with their labels."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    shown = [s for s in summaries if s.kept]
    ax.scatter([s.mean_m for s in shown], [s.mean_s for s in shown], color="grey", alpha=0.3, s=12, label="clusters")
    for s in shown:
        if s.cluster in named:
            ax.scatter([s.mean_m], [s.mean_s], color="orange", s=30, zorder=3)
            ax.annotate(named[s.cluster], (s.mean_m, s.mean_s), textcoords="offset points", xytext=(5, 5),
                        color="darkorange", fontsize=9)
    ax.invert_xaxis()
    ax.set_xlabel("mean mixture index M (planes with M >= 0.01)")
    ax.set_ylabel("mean separability index S (bits)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
