"""Which SAE clusters hold the days, months and years, and are their reconstructions circular and in calendar
order? (docs/discover.md; the paper's section 4.2 found such clusters by eye in GPT-2 and Mistral.)

Tokens are classed strictly, by their text: a day is a capitalised weekday name (" Monday", "Mondays"), a month
a capitalised month name, and a year digit a digit token inside a four-digit number 1500..2099 that stands
alone (tokenizers that split numbers into digits, such as SmolLM2's, give years as four one-digit tokens; a
tokenizer with whole-number tokens gives one token of four digits, also counted). A cluster's points are the
tokens where any of its features fires (its reconstructions, multid.sae.reconstruct); its count for a class
is how many of those points have that class, its purity that count over its points, its coverage that count
over the class's tokens in the corpus.

Order on the circle: in the top-2 PCs of the cluster's reconstructions, each class's mean point is given an
angle around the centre of the class means; `adjacent_fraction` is the share of calendar neighbours
(Monday-Tuesday, ..., Sunday-Monday) that are also neighbours in angle (1.0 = a perfect cycle, either
direction; a random order of 12 classes gives about 2/11 = 0.18, of 7 about 1/3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from multid.sae.labels import DAY_NAMES, MONTH_NAMES, OTHER

CATEGORIES = ("days", "months", "years")
PERIODS = {"days": 7, "months": 12}
YEAR_RANGE = (1500, 2099)
MIN_CLASS_POINTS = 3


def strict_classes(token_strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(day class, month class) per vocabulary string; OTHER where it is not a capitalised full name."""
    days = {name: i for i, name in enumerate(DAY_NAMES)}
    days.update({name + "s": i for i, name in enumerate(DAY_NAMES)})
    months = {name: i for i, name in enumerate(MONTH_NAMES)}
    day = np.full(len(token_strings), OTHER, dtype=np.int64)
    month = np.full(len(token_strings), OTHER, dtype=np.int64)
    for i, text in enumerate(token_strings):
        word = text.replace("\u2581", " ").replace("\u0120", " ").strip()
        day[i] = days.get(word, OTHER)
        month[i] = months.get(word, OTHER)
    return day, month


def year_of_tokens(ids: np.ndarray, ctx_len: int, digit_value: np.ndarray, number_value: np.ndarray) -> np.ndarray:
    """The year (1500..2099) each token is part of, else OTHER; ids are the run's token ids in token order
    (contexts of ctx_len). digit_value[v] = the digit of one-digit token v (else -1); number_value[v] = the
    value of a four-digit token v (else -1)."""
    n = len(ids)
    digits = digit_value[ids]
    year = np.full(n, OTHER, dtype=np.int64)
    whole = number_value[ids]
    in_range = (whole >= YEAR_RANGE[0]) & (whole <= YEAR_RANGE[1])
    year[in_range] = whole[in_range]
    pos = np.arange(n) % ctx_len
    # runs of exactly four digits inside one context: start s with digits[s..s+3] >= 0, digits[s-1] < 0,
    # digits[s+4] < 0 and all in the same context
    is_digit = digits >= 0
    s = np.arange(max(n - 3, 0))
    four = is_digit[s] & is_digit[s + 1] & is_digit[s + 2] & is_digit[s + 3] & (pos[s] <= ctx_len - 4)
    before_ok = np.ones_like(four)
    before_ok[1:] = ~is_digit[s[1:] - 1] | (pos[s[1:]] == 0)
    after = s + 4
    after_ok = np.ones_like(four)
    inside = after < n
    after_ok[inside] = ~is_digit[after[inside]] | (pos[after[inside]] == 0)
    starts = s[four & before_ok & after_ok]
    values = digits[starts] * 1000 + digits[starts + 1] * 100 + digits[starts + 2] * 10 + digits[starts + 3]
    good = (values >= YEAR_RANGE[0]) & (values <= YEAR_RANGE[1])
    for offset in range(4):
        year[starts[good] + offset] = values[good]
    return year


def vocabulary_tables(token_strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(digit value, four-digit number value) per vocabulary string, -1 elsewhere."""
    digit = np.full(len(token_strings), -1, dtype=np.int64)
    number = np.full(len(token_strings), -1, dtype=np.int64)
    for i, text in enumerate(token_strings):
        word = text.replace("\u2581", " ").replace("\u0120", " ").strip()
        if len(word) == 1 and word in "0123456789" and text == word:
            digit[i] = int(word)
        elif len(word) == 4 and all(ch in "0123456789" for ch in word):
            number[i] = int(word)
    return digit, number


@dataclass(frozen=True)
class TokenClasses:
    """Per token of the run (token order): day class, month class, year (OTHER where none)."""

    day: np.ndarray
    month: np.ndarray
    year: np.ndarray

    def of(self, category: str) -> np.ndarray:
        return {"days": self.day, "months": self.month, "years": self.year}[category]

    def totals(self) -> dict[str, int]:
        return {c: int((self.of(c) != OTHER).sum()) for c in CATEGORIES}


def token_classes(ids: np.ndarray, ctx_len: int, token_strings: Sequence[str]) -> TokenClasses:
    day_v, month_v = strict_classes(token_strings)
    digit, number = vocabulary_tables(token_strings)
    return TokenClasses(day_v[ids], month_v[ids], year_of_tokens(ids, ctx_len, digit, number))


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
    radii = np.linalg.norm(rel, axis=1)
    return CircleOrder(m, float(np.mean(adjacent)) if adjacent else float("nan"),
                       is_cyclic(order, present), float(radii.std() / radii.mean()) if radii.mean() > 0 else 0.0,
                       [int(k) for k in order])


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
    """The order check on the cluster's top-2 PCs ("circle", as the issue asks), on each consecutive PC plane
    up to PCs max_plane-max_plane+1 ("circle_by_plane"; the paper's Figure 1 shows PCs 2-3), and on the top-2
    PCs of the class's own points inside the cluster's PC space ("circle_class_pca": a cluster that holds
    other tokens too can put them in its first PCs)."""
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
