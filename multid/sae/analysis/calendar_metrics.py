"""Which SAE clusters hold the days, months and years, and are their reconstructions circular and in calendar
order? (docs/discover.md; the paper's section 4.2 found such clusters by eye in GPT-2 and Mistral.)

Tokens are classed strictly, by their text (multid.sae.data.calendar_tokens). A cluster's points are the
tokens where any of its features fires (its reconstructions, multid.sae.analysis.reconstructions); its count for a class
is how many of those points have that class, its purity that count over its points, its coverage that count
over the class's tokens in the corpus.

Order on the circle: in the top-2 PCs of the cluster's reconstructions, each class's mean point is given an
angle around the centre of the class means; `adjacent_fraction` is the share of calendar neighbours
(Monday-Tuesday, ..., Sunday-Monday) that are also neighbours in angle (1.0 = a perfect cycle, either
direction). Its chance level is exact: on a cycle of m classes two given classes are neighbours with
probability 2 / (m - 1), so a random order of 12 classes gives 2/11 = 0.18, of 7 1/3, and of 3 classes 1.0 (any
order of three is a cycle: with 3 classes present the share says nothing). `adjacent_p` is the share of random
orders (seeded permutations) whose adjacent_fraction is at least the observed one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from multid.sae.data.calendar_tokens import (CATEGORIES, FIGURE_CATEGORIES, LABELS_VERSION, PERIODS,
                                             VERDICT_CATEGORIES, YEAR_RANGE, TokenClasses, strict_classes,
                                             token_classes, vocabulary_tables, year_of_tokens)
from multid.sae.data.token_labels import OTHER

# with the token classes the metrics are computed on
__all__ = ["CATEGORIES", "FIGURE_CATEGORIES", "LABELS_VERSION", "PERIODS", "VERDICT_CATEGORIES", "YEAR_RANGE",
           "TokenClasses", "strict_classes", "token_classes", "vocabulary_tables", "year_of_tokens", "ClusterCounts",
           "cluster_counts",
           "f1_score", "best_cluster", "CircleOrder", "circle_order", "adjacent_chance", "adjacent_p_value",
           "is_cyclic", "circle_report", "MIN_CLASS_POINTS"]

MIN_CLASS_POINTS = 3
ORDER_DRAWS = 10_000  # random orders behind adjacent_p


@dataclass
class ClusterCounts:
    cluster: int
    size: int
    points: int
    counts: dict[str, int]

    def purity(self, category: str) -> float:
        return self.counts[category] / self.points if self.points else 0.0


def cluster_counts(token: np.ndarray, feature: np.ndarray, clusters: Sequence[Sequence[int]], num_features: int,
                   classes: TokenClasses) -> list[ClusterCounts]:
    """Points and class counts of every cluster (a token counts once per cluster however many members fire)."""
    owner = np.full(num_features, -1, dtype=np.int64)
    for c, members in enumerate(clusters):
        owner[np.asarray(members, dtype=np.int64)] = c
    cl = owner[feature]
    keep = cl >= 0
    pairs = np.unique(cl[keep] * (int(token.max(initial=0)) + 1) + token[keep])
    pc = pairs // (int(token.max(initial=0)) + 1)
    pt = pairs % (int(token.max(initial=0)) + 1)
    n = len(clusters)
    points = np.bincount(pc, minlength=n)
    per = {cat: np.bincount(pc[classes.of(cat)[pt] != OTHER], minlength=n) for cat in CATEGORIES}
    return [ClusterCounts(c, len(clusters[c]), int(points[c]), {cat: int(per[cat][c]) for cat in CATEGORIES})
            for c in range(n)]


def f1_score(purity: float, coverage: float) -> float:
    return 2 * purity * coverage / (purity + coverage) if purity + coverage > 0 else 0.0


def best_cluster(counts: Sequence[ClusterCounts], category: str, total: int, min_size: int = 2
                 ) -> ClusterCounts | None:
    """The cluster (of at least min_size features) that best holds the category: the highest F1 of purity
    (its points that are of the category) and coverage (the category's tokens it holds, of `total`), so that
    neither a huge cluster that fires everywhere nor a pure one that holds three tokens wins; ties by id."""
    pool = [c for c in counts if c.size >= min_size and c.counts[category] > 0]
    if not pool:
        return None
    return max(pool, key=lambda c: (f1_score(c.purity(category), c.counts[category] / max(1, total)), -c.cluster))


# ----------------------------------------------------------------------------------------- order on the circle


@dataclass
class CircleOrder:
    classes_present: int
    adjacent_fraction: float  # calendar neighbours that are angular neighbours
    adjacent_chance: float  # its expectation under a random order of the classes present (2 / (m - 1))
    adjacent_p: float  # share of random orders with an adjacent_fraction at least as high (seeded)
    cyclic_order: bool  # the angular order is the calendar order up to rotation and direction
    radius_cv: float  # std / mean of the class means' distances to their centre (0 = on a circle)
    angle_order: list[int]  # classes by angle

    def record(self) -> dict[str, Any]:
        return asdict(self)


def circle_order(coords2: np.ndarray, labels: np.ndarray, period: int, min_points: int = MIN_CLASS_POINTS
                 ) -> CircleOrder | None:
    """How circular and calendar-ordered the class means of 2-D points are (None with fewer than 3 classes)."""
    present = [k for k in range(period) if int((labels == k).sum()) >= min_points]
    if len(present) < 3:
        return None
    means = np.stack([coords2[labels == k].mean(0) for k in present])
    centre = means.mean(0)
    rel = means - centre
    angles = np.arctan2(rel[:, 1], rel[:, 0])
    order = [present[i] for i in np.argsort(angles)]
    position = {k: i for i, k in enumerate(order)}
    m = len(order)
    pairs = [(k, (k + 1) % period) for k in range(period) if k in position and (k + 1) % period in position]
    adjacent = [abs(position[a] - position[b]) in (1, m - 1) for a, b in pairs]
    observed = float(np.mean(adjacent)) if adjacent else float("nan")
    radii = np.linalg.norm(rel, axis=1)
    return CircleOrder(m, observed, adjacent_chance(m), adjacent_p_value(present, pairs, observed),
                       is_cyclic(order, present), float(radii.std() / radii.mean()) if radii.mean() > 0 else 0.0,
                       [int(k) for k in order])


def adjacent_chance(m: int) -> float:
    """Expected adjacent_fraction when m >= 3 classes are put in a random cyclic order: 2 / (m - 1)."""
    return min(1.0, 2.0 / (m - 1))


def adjacent_p_value(present: Sequence[int], pairs: Sequence[tuple[int, int]], observed: float,
                     draws: int = ORDER_DRAWS, seed: int = 0) -> float:
    """P(adjacent_fraction >= observed) over random orders of the classes present ((hits + 1) / (draws + 1),
    seeded; NaN when there is no calendar pair to score)."""
    if not pairs or observed != observed:
        return float("nan")
    m = len(present)
    index = {k: i for i, k in enumerate(present)}
    a = np.array([index[x] for x, _ in pairs])
    b = np.array([index[y] for _, y in pairs])
    positions = np.argsort(np.random.default_rng(seed).random((draws, m)), axis=1)  # a random order per draw
    gap = np.abs(positions[:, a] - positions[:, b])
    share = ((gap == 1) | (gap == m - 1)).mean(axis=1)
    return float(((share >= observed - 1e-12).sum() + 1) / (draws + 1))


def is_cyclic(order: Sequence[int], present: Sequence[int]) -> bool:
    """True when `order` is the sorted `present` classes rotated, in either direction."""
    ref = list(sorted(present))
    m = len(ref)
    for seq in (list(order), list(reversed(order))):
        start = seq.index(ref[0])
        if seq[start:] + seq[:start] == ref:
            return True
    return m < 3


def circle_report(coords: np.ndarray, labels: np.ndarray, period: int, max_plane: int = 3) -> dict[str, Any]:
    """The calendar-order check (`circle_order`) in three views of a cluster's PCA coordinates:
    - "circle": its top-2 PCs;
    - "circle_by_plane": each plane of consecutive PCs, (1, 2), (2, 3), ... up to (max_plane, max_plane + 1),
      keyed by 0-based indices ("0-1", "1-2", ...); the paper's Figure 1 shows some clusters in PCs 2-3;
    - "circle_class_pca": the top-2 PCs of the class's own points inside the cluster's PC space (a cluster
      that also holds other tokens can spend its first PCs on them)."""
    out: dict[str, Any] = {}
    by_plane = {}
    for i in range(min(max_plane, coords.shape[1] - 1)):
        order = circle_order(coords[:, [i, i + 1]], labels, period)
        if order is not None:
            by_plane[f"{i}-{i + 1}"] = order.record()
    if "0-1" in by_plane:
        out["circle"] = by_plane["0-1"]
    if by_plane:
        out["circle_by_plane"] = by_plane
    mask = labels != OTHER
    if int(mask.sum()) >= 3 and coords.shape[1] >= 2:
        own = coords[mask] - coords[mask].mean(0)
        _u, _s, vt = np.linalg.svd(own, full_matrices=False)
        order = circle_order(own @ vt[:2].T, labels[mask], period)
        if order is not None:
            out["circle_class_pca"] = order.record()
    return out


# ----------------------------------------------------------------------------------------- the verdict (issue 33)


@dataclass(frozen=True)
class Targets:
    """What a named weekday or month cluster must show to count as found (issue 33)."""

    purity: float = 0.5
    coverage: float = 0.5
    adjacent: float = 0.8  # calendar order of the class means in the best view
    min_classes: int = 5  # classes present in that view: with fewer, chance is 2 / (m - 1) >= 0.5
    top_share: float = 0.10  # rank in the scan within the top 10 % of the clusters ranked


TARGETS = Targets()


def order_views(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every view of a cluster's calendar order: each PC plane ("PCs 1-2", ...) and the class's own PCs."""
    views = {f"PCs {int(k.split('-')[0]) + 1}-{int(k.split('-')[1]) + 1}": v
             for k, v in entry.get("circle_by_plane", {}).items()}
    if "circle_class_pca" in entry:
        views["class PCs"] = entry["circle_class_pca"]
    return views


def best_of(views: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The view with the highest adjacent share (then more classes present, then the earlier view)."""
    names = list(views)
    if not names:
        return None
    best = max(names, key=lambda k: (views[k]["adjacent_fraction"], views[k]["classes_present"], -names.index(k)))
    return best, views[best]


def best_view(entry: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The best of every view of the cluster's calendar order (`order_views`)."""
    return best_of(order_views(entry))


def verdict(entry: dict[str, Any], targets: Targets = TARGETS) -> dict[str, Any]:
    """Each target met or not, the best view of the order (its p-value Bonferroni-corrected for the views
    tried), and `found`: every target met."""
    best = best_view(entry)
    views = len(order_views(entry))
    order = best[1] if best else {}
    checks = {
        "purity": entry["purity"] >= targets.purity,
        "coverage": entry["coverage"] >= targets.coverage,
        "order": bool(best) and order["adjacent_fraction"] >= targets.adjacent
        and order["classes_present"] >= targets.min_classes,
        "rank": "rank" in entry and entry["rank"] <= targets.top_share * entry["ranked_clusters"],
    }
    return {"best_view": best[0] if best else None, "adjacent_fraction": order.get("adjacent_fraction"),
            "adjacent_chance": order.get("adjacent_chance"), "classes_present": order.get("classes_present"),
            "adjacent_p_corrected": min(1.0, order["adjacent_p"] * views) if best else None,
            "checks": checks, "found": all(checks.values())}


# ----------------------------------------------------------------------------------------- one feature per class


def class_features(token: np.ndarray, feature: np.ndarray, value: np.ndarray, labels: np.ndarray, period: int,
                   W_dec: np.ndarray) -> dict[str, Any]:
    """Does the SAE have a feature per weekday (month), and do their decoder rows form a circle a clustering of
    decoder directions could find? Per class: the feature that best marks it (highest F1 of precision, the share
    of its activation that falls on the class's tokens, and recall, the share of the class's tokens where it
    fires); then the mean decoder cosine of those features, of calendar neighbours apart, and the calendar order
    of the rows in their top-2 PCs."""
    num = W_dec.shape[0]
    value = np.asarray(value, dtype=np.float64)
    mass = np.bincount(feature, weights=value, minlength=num)
    rows = []
    for k in range(period):
        on = labels[token] == k
        n_k = int((labels == k).sum())
        if n_k == 0:
            rows.append({"class": k, "tokens": 0})
            continue
        hits = np.bincount(feature[on], minlength=num)
        precision = np.bincount(feature[on], weights=value[on], minlength=num) / np.maximum(mass, 1e-12)
        recall = hits / n_k
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1))
        rows.append({"class": k, "tokens": n_k, "feature": best, "precision": round(float(precision[best]), 4),
                     "recall": round(float(recall[best]), 4)})
    present = [r for r in rows if "feature" in r]
    out: dict[str, Any] = {"per_class": rows, "distinct_features": len({r["feature"] for r in present})}
    if len(present) < 3:
        return out
    unit = W_dec / np.maximum(np.linalg.norm(W_dec, axis=1, keepdims=True), 1e-12)
    rows_w = unit[[r["feature"] for r in present]]
    cos = rows_w @ rows_w.T
    classes = [r["class"] for r in present]
    neighbours = {(a, b) for a in classes for b in classes if (b - a) % period in (1, period - 1)}
    pairs = [(i, j) for i in range(len(classes)) for j in range(i + 1, len(classes))]
    near = [cos[i, j] for i, j in pairs if (classes[i], classes[j]) in neighbours]
    far = [cos[i, j] for i, j in pairs if (classes[i], classes[j]) not in neighbours]
    centred = rows_w - rows_w.mean(0)
    _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
    order = circle_order(centred @ vt[:2].T, np.array(classes), period, min_points=1)
    out.update({"mean_cosine": round(float(np.mean([cos[i, j] for i, j in pairs])), 4),
                "neighbour_cosine": round(float(np.mean(near)), 4) if near else None,
                "other_cosine": round(float(np.mean(far)), 4) if far else None,
                "decoder_order": order.record() if order else None})
    return out
