"""Which layer should the SAE read? The weekday and month circles in the residuals of the corpus's own calendar
tokens, layer by layer (issue 33; docs/discover.md, "The layer").

For a layer and a kind (weekday or month, either form: names and abbreviations), X holds the residuals
(`hook_resid_pre`) at a seeded sample of the corpus's tokens of that kind, with their classes (Monday = 0, ...):
- `between_share`: the share of X's variance (around its mean) that the class explains (class means, weighted
  by class counts, against all points);
- `plane_share`: the share of the class means' variance in their top-2 principal plane;
- `circle_share` = between_share x plane_share: the share of the tokens' variance that lies on the class means'
  best plane, i.e. how much an SAE that reconstructs these tokens gains from the circle;
- the calendar order of the class means in that plane (`calendar_metrics.circle_order`, with its chance level).

The criterion (`choose_layer`): the layer with the highest circle_share averaged over the two kinds, among the
layers where both kinds' class means go round in calendar order (adjacent share >= ORDER_TARGET). The
embedding (layer 0) is scored but not chosen: there a token's residual is its embedding alone, so the circle
of the class means is a property of the token table, not of the text around it, and an SAE there learns
the token table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from multid.sae.analysis.calendar_metrics import circle_order
from multid.sae.data.calendar_tokens import PERIODS, TokenClasses
from multid.sae.data.token_labels import OTHER

KINDS = ("weekday", "month")
FORMS = {"weekday": ("days", "day_abbr"), "month": ("months", "month_abbr")}
PER_CLASS_FORM = 60  # sampled occurrences per class and form (the abbreviations are most of the mail's)
ORDER_TARGET = 0.8
CRITERION = (f"the layer >= 1 with the highest circle share averaged over weekdays and months, among the layers where "
             f"both kinds' class means go round in calendar order (adjacent share >= {ORDER_TARGET})")


@dataclass(frozen=True)
class Sample:
    """Calendar tokens drawn from the corpus: flat positions (context * ctx_len + position) and, per kind, the
    class of each drawn position (OTHER where it is not of that kind)."""

    positions: np.ndarray  # [n] sorted flat positions
    labels: dict[str, np.ndarray]  # kind -> [n] class or OTHER


def draw_sample(classes: TokenClasses, per_class_form: int = PER_CLASS_FORM, seed: int = 0) -> Sample:
    """Up to `per_class_form` positions of each class in each form (seeded), for both kinds."""
    rng = np.random.default_rng(seed)
    chosen = []
    for kind in KINDS:
        for form in FORMS[kind]:
            labels = classes.of(form)
            for k in range(PERIODS[kind]):
                where = np.flatnonzero(labels == k)
                if len(where) > per_class_form:
                    where = np.sort(rng.choice(where, per_class_form, replace=False))
                chosen.append(where)
    positions = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return Sample(positions, {kind: classes.of(kind)[positions] for kind in KINDS})


def residuals_at(run_model: Callable[[np.ndarray], list[np.ndarray]], token_ids: np.ndarray,
                 positions: np.ndarray, batch_size: int = 16, progress: Callable[[int], None] | None = None
                 ) -> list[np.ndarray]:
    """Residuals [layers][n, d] at flat `positions` of the contexts `token_ids` [C, T]. `run_model(tokens [b, t])` returns per layer [b, t, d] for the contexts cut at the last wanted position + 1 (the model is
    causal, so a context cut after its last needed token gives the same residuals there)."""
    ctx_len = token_ids.shape[1]
    contexts, offsets = positions // ctx_len, positions % ctx_len
    unique = np.unique(contexts)
    last = np.array([offsets[contexts == c].max() for c in unique])
    order = np.argsort(last, kind="stable")  # similar lengths together
    out: list[np.ndarray] | None = None
    for start in range(0, len(order), batch_size):
        batch = unique[order[start:start + batch_size]]
        length = int(last[order[start:start + batch_size]].max()) + 1
        layers = run_model(token_ids[batch, :length])
        if out is None:
            out = [np.zeros((len(positions), x.shape[-1]), dtype=np.float32) for x in layers]
        for row, c in enumerate(batch):
            rows = np.flatnonzero(contexts == c)
            for layer, x in enumerate(layers):
                out[layer][rows] = x[row, offsets[rows]]
        if progress is not None:
            progress(len(batch))
    return out or []


@dataclass(frozen=True)
class CircleProminence:
    points: int
    classes_present: int
    between_share: float
    plane_share: float
    circle_share: float
    adjacent_fraction: float
    adjacent_chance: float
    adjacent_p: float
    angle_order: list[int]

    def record(self) -> dict[str, Any]:
        return asdict(self)


def circle_prominence(x: np.ndarray, labels: np.ndarray, period: int) -> CircleProminence | None:
    """How much of the points' variance lies on their class means' best plane, and the calendar order there
    (None with fewer than 3 classes)."""
    keep = labels != OTHER
    x, labels = np.asarray(x[keep], dtype=np.float64), labels[keep]
    present = [k for k in range(period) if (labels == k).sum() >= 3]
    if len(present) < 3:
        return None
    mask = np.isin(labels, present)
    x, labels = x[mask], labels[mask]
    centred = x - x.mean(0)
    total = float((centred ** 2).sum())
    means = np.stack([centred[labels == k].mean(0) for k in present])
    counts = np.array([(labels == k).sum() for k in present], dtype=np.float64)
    weighted = means * np.sqrt(counts)[:, None]
    between = float((weighted ** 2).sum())
    _u, s, vt = np.linalg.svd(weighted, full_matrices=False)
    plane = float((s[:2] ** 2).sum())
    order = circle_order(centred @ vt[:2].T, labels, period)
    return CircleProminence(int(len(x)), len(present), between / total, plane / between, plane / total,
                            order.adjacent_fraction, order.adjacent_chance, order.adjacent_p, order.angle_order)


def profile(residuals: Sequence[np.ndarray], sample: Sample) -> list[dict[str, Any]]:
    """Per layer: each kind's CircleProminence record (or None)."""
    out = []
    for layer, x in enumerate(residuals):
        row: dict[str, Any] = {"layer": layer}
        for kind in KINDS:
            found = circle_prominence(x, sample.labels[kind], PERIODS[kind])
            row[kind] = found.record() if found else None
        out.append(row)
    return out


def choose_layer(rows: Sequence[dict[str, Any]], target: float = ORDER_TARGET) -> int | None:
    """The criterion of the module docstring: the highest mean circle_share over the kinds, layer >= 1, both
    kinds in calendar order; None where no layer qualifies."""
    best, best_score = None, -np.inf
    for row in rows:
        entries = [row.get(kind) for kind in KINDS]
        if row["layer"] < 1 or any(e is None or not e["adjacent_fraction"] >= target for e in entries):
            continue
        score = float(np.mean([e["circle_share"] for e in entries]))
        if score > best_score:
            best, best_score = int(row["layer"]), score
    return best
