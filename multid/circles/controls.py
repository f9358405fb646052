"""Random-subspace controls for the circle patch: what a 2-D patch that is not the circle does (docs/controls.md).

A subspace patch replaces, at the start word, the coordinates of the activation x in a 2-D subspace W (orthonormal
columns) by where the problems of the new value v sit in W, and keeps the rest of x:

    x' = x - ((x - mu) W) W^T + cbar_W[v] W^T,   cbar_W[v] = mean over problems with the patched letter = v of (x - mu) W,

run on exactly patch circle's runs (problem i, value v, expected new answer c'). Three kinds of W:

- `circle_plane`: the probe's circle plane itself (one, deterministic): the circle under the controls' rule;
- `patch_random`: K seeded draws, uniform among 2-D subspaces of the residual stream (QR of a d x 2 Gaussian);
- `patch_random_pca`: K seeded draws, uniform among 2-D subspaces of the top-k PCA space that patch PCA uses
  (C^T times the QR of a k x 2 Gaussian).

The paper's patch circle also sets everything outside the plane to the mean (mu + T[v] plane^T), so it mixes a
move of the circle with an average ablation of the rest; `circle_plane` is the same move without the ablation,
which is what the random planes are compared with.

Each patch is scored like the sweep's variants: the per-run slope of its change of logit[c] - logit[c'] (against
no-op) on patch layer's change, run by run. The scale: 0 = no effect, 0.5 = the answer destroyed but not moved
(average ablation's score, since Delta = const - f(x_i) against f(x_j) - f(x_i)), 1 = a full transfer. Where patch
layer changes nothing the slope is 0/0: NaN, printed "n/a".

The chance floor of the runs: the share of runs whose counterfactual answer c' equals the base answer c, which a
patch would "transfer" by doing nothing. The run rule skips v = a (letter a) or v = c (letter c), so it is 0 for
both tasks; it is computed, not assumed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from multid.circles.engine import metric
from multid.circles.probe import VARIANTS, CircleBasis, InterventionRuns
from multid.io import save_figure

CONTROL_KINDS = ("patch_random", "patch_random_pca")  # K seeded draws each
CONTROL_LABELS = {"circle_plane": "circle plane (same rule)", "patch_random": "random 2-D subspace",
                  "patch_random_pca": "random 2-D subspace of the PCA space"}
DEFAULT_DRAWS = 10
CONTROLS_VERSION = 1
BAND = (2.5, 97.5)  # percentiles of the draws shown as the 95 % band
# patch layer's per-run change (RMS, logits) below which a layer's shares are 0/0: reported as NaN
MIN_LAYER_EFFECT = 1e-4
LETTER_COLUMN = {"a": 0, "c": 2}


def draw_seed(seed: int, layer: int, kind: str, draw: int) -> int:
    """The generator seed of one draw: a fixed function of (seed, layer, kind, draw), so any draw can be redone."""
    return int(np.random.SeedSequence([seed, layer, CONTROL_KINDS.index(kind), draw]).generate_state(1)[0])


def random_plane(kind: str, basis: CircleBasis, seed: int) -> torch.Tensor:
    """[d, 2] orthonormal columns: a uniformly random 2-D subspace of the residual stream (patch_random) or of the
    span of the PCA components (patch_random_pca), drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    components = basis.pca_components  # [k, d], orthonormal rows
    if kind == "patch_random":
        gaussian = torch.randn(components.shape[1], 2, generator=generator, dtype=torch.float64)
        plane, _ = torch.linalg.qr(gaussian)
    elif kind == "patch_random_pca":
        gaussian = torch.randn(components.shape[0], 2, generator=generator, dtype=torch.float64)
        inner, _ = torch.linalg.qr(gaussian)
        plane = components.double().cpu().T @ inner
    else:
        raise ValueError(f"unknown control {kind!r}; choose from {CONTROL_KINDS}")
    return plane.to(basis.mean)


def value_centroids(x: torch.Tensor, mean: torch.Tensor, plane: torch.Tensor, values_of_problems: np.ndarray,
                    p: int) -> torch.Tensor:
    """[p, D] mean centred coordinates (x - mu) W of the problems whose patched letter has each value (0 where no
    problem has it)."""
    coords = (x - mean) @ plane
    labels = torch.as_tensor(np.asarray(values_of_problems), dtype=torch.long, device=coords.device)
    sums = torch.zeros(p, coords.shape[1], dtype=coords.dtype, device=coords.device).index_add_(0, labels, coords)
    counts = torch.bincount(labels, minlength=p).clamp(min=1).to(coords.dtype)
    return sums / counts[:, None]


def patch_subspace(x: torch.Tensor, mean: torch.Tensor, plane: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """[m, d] x with its centred W coordinates set to `coords` [m, 2]: x - ((x - mu) W) W^T + coords W^T."""
    return x - ((x - mean) @ plane) @ plane.T + coords @ plane.T


def plane_vectors(plane: torch.Tensor, basis: CircleBasis, x: torch.Tensor, runs: InterventionRuns, infos: np.ndarray,
                  letter: str, p: int) -> torch.Tensor:
    """[R, d] every run's problem activation with its W coordinates moved to the new value's centroid
    (x: [n, d] the patched position's clean activations of every problem)."""
    centroids = value_centroids(x, basis.mean, plane, np.asarray(infos)[:, LETTER_COLUMN[letter]], p)
    return patch_subspace(x[torch.as_tensor(runs.problem)], basis.mean, plane, centroids[torch.as_tensor(runs.value)])


def chance_floor(infos: np.ndarray, runs: InterventionRuns) -> float:
    """Share of runs whose counterfactual answer equals the base answer (a patch that does nothing 'transfers' them)."""
    return float(np.mean(np.asarray(infos)[runs.problem, 2] == runs.new_answer)) if len(runs) else float("nan")


def per_run_shares(effects: np.ndarray, layer_effect: np.ndarray) -> np.ndarray:
    """Slope <effect, layer_effect> / <layer_effect, layer_effect> over the last axis; NaN where patch layer's
    change is below MIN_LAYER_EFFECT (RMS)."""
    power = np.sum(layer_effect**2, axis=-1)
    flat = np.sqrt(power / max(layer_effect.shape[-1], 1)) < MIN_LAYER_EFFECT
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.sum(effects * layer_effect, axis=-1) / power
    return np.where(flat, np.nan, slope)


@dataclass
class ControlResult:
    """Controls of the finished layers of one sweep: the circle plane's metric [L, R], the controls' [L, kinds, K, R],
    and the sweep's own raw metric [L, 7, R]."""

    layers: np.ndarray
    circle: np.ndarray
    raw: np.ndarray
    sweep_raw: np.ndarray
    floor: float
    meta: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)

    def layer_effect(self) -> np.ndarray:
        return self.sweep_raw[:, VARIANTS.index("patch_layer"), :] - self.sweep_raw[:, VARIANTS.index("no_op"), :]

    def variant_share(self, variant: str) -> np.ndarray:
        """[L] per-run share of a sweep variant (patch circle, average ablate, ...)."""
        effect = self.sweep_raw[:, VARIANTS.index(variant), :] - self.sweep_raw[:, VARIANTS.index("no_op"), :]
        return per_run_shares(effect, self.layer_effect())

    def circle_plane_share(self) -> np.ndarray:
        """[L] per-run share of the circle plane under the controls' rule."""
        return per_run_shares(self.circle - self.sweep_raw[:, VARIANTS.index("no_op"), :], self.layer_effect())

    def draw_shares(self, kind: str) -> np.ndarray:
        """[L, K] per-run share of each draw of one control."""
        noop = self.sweep_raw[:, VARIANTS.index("no_op"), :]
        effects = self.raw[:, CONTROL_KINDS.index(kind)] - noop[:, None, :]
        return per_run_shares(effects, self.layer_effect()[:, None, :])

    def summary(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[L] mean share over the draws and the 2.5th / 97.5th percentiles (NaN on flat layers)."""
        return draw_band(self.draw_shares(kind), axis=1)


def draw_band(values: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeded draws and their 95 % band (`BAND` percentiles) along `axis`, ignoring NaN (flat layers);
    all NaN where there are no draws."""
    values = np.asarray(values, dtype=float)
    if values.shape[axis] == 0:
        nan = np.full(np.delete(values.shape, axis), np.nan)
        return nan, nan, nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (flat layers) are NaN by design
        return (np.nanmean(values, axis=axis), np.nanpercentile(values, BAND[0], axis=axis),
                np.nanpercentile(values, BAND[1], axis=axis))


SUMMARY_COLUMNS = ("layer", "patch_circle_share", "average_ablate_share", "patch_pca_share", "circle_plane_share",
                   *(f"{kind}_{stat}" for kind in CONTROL_KINDS for stat in ("mean", "lo", "hi")), "chance_floor")


def summary_rows(result: ControlResult) -> list[tuple]:
    """One row per layer: the shares of patch circle, average ablate, patch PCA and the circle plane under the
    controls' rule, each control's mean and 95 % band over its draws, and the chance floor ("n/a" where patch
    layer changes nothing)."""
    columns = [result.variant_share("patch_circle"), result.variant_share("average_ablate"),
               result.variant_share("patch_pca"), result.circle_plane_share()]
    for kind in CONTROL_KINDS:
        columns.extend(result.summary(kind))
    rows = []
    for index, layer in enumerate(result.layers):
        numbers = [column[index] for column in columns] + [result.floor]
        rows.append((int(layer), *("n/a" if not np.isfinite(v) else f"{v:.4g}" for v in numbers)))
    return rows


def format_share(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.2f}"


def table_lines(result: ControlResult) -> list[str]:
    """The controls as a printed table: per layer, each patch's share of patch layer's per-run effect, with the
    random controls' means and 95 % bands."""
    lines = [f"share of patch layer's per-run effect (0: none, 0.5: destroyed, 1: moved); random planes: mean "
             f"[95 % band] of {result.raw.shape[2]} draws; chance floor {result.floor:.2f}",
             f"{'layer':>5} {'circle':>7} {'ablate':>7} {'circle*':>8} {'random 2-D':>20} {'random in PCA':>20}"]
    columns = (result.variant_share("patch_circle"), result.variant_share("average_ablate"), result.circle_plane_share())
    bands = [result.summary(kind) for kind in CONTROL_KINDS]
    for index, layer in enumerate(result.layers):
        cells = [f"{format_share(m[index])} [{format_share(lo[index])}, {format_share(hi[index])}]" for m, lo, hi in bands]
        shares = "".join(f"{format_share(column[index]):>8}" for column in columns)
        lines.append(f"{int(layer):>5}{shares} {cells[0]:>20} {cells[1]:>20}")
    lines.append("circle: the paper's patch circle (the rest set to the mean); circle*: the circle plane patched by the "
                 "random planes' rule (the rest kept); n/a: patch layer changes nothing there")
    return lines


def plot_controls(result: ControlResult, out_path: Path, title: str = "") -> Path:
    """Share of patch layer's per-run effect vs layer: patch circle, the circle plane under the controls' rule,
    patch PCA, average ablate, and each random control's mean with its 95 % band over draws (beside Figure 5,
    which stays as published)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    layers = result.layers
    colors = {"patch_random": "tab:orange", "patch_random_pca": "tab:purple"}
    for kind in CONTROL_KINDS:
        mean, lo, hi = result.summary(kind)
        ax.fill_between(layers, lo, hi, color=colors[kind], alpha=0.2, linewidth=0)
        ax.plot(layers, mean, color=colors[kind], marker=".", label=f"{CONTROL_LABELS[kind]} (mean, 95 % band of "
                f"{result.raw.shape[2]} draws)")
    ax.plot(layers, result.variant_share("patch_circle"), color="tab:red", marker="o", markersize=3, label="patch circle")
    ax.plot(layers, result.circle_plane_share(), color="tab:red", linestyle=":", marker="s", markersize=3,
            label=CONTROL_LABELS["circle_plane"])
    ax.plot(layers, result.variant_share("patch_pca"), color="tab:green", marker="o", markersize=3, label="patch PCA")
    ax.plot(layers, result.variant_share("average_ablate"), color="0.4", linestyle="--", label="average ablate")
    ax.axhline(result.floor, color="0.6", linewidth=0.8, label=f"chance floor ({result.floor:.2f})")
    ax.set_xlabel("layer")
    ax.set_ylabel("share of patch layer's per-run effect")
    ax.set_ylim(-0.2, 1.2)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    save_figure(fig, out_path, dpi=150, close=True)
    return out_path


def layer_control_metrics(engine, cache, basis: CircleBasis, layer: int, runs: InterventionRuns, letter: str,
                          draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """logit[c] - logit[c'] on every run of one layer: the circle plane under the controls' rule [R], and every
    draw of each control [kinds, draws, R] (one batched forward per plane, through the sweep's engine)."""
    x = cache.layer_acts(layer)[:, engine.position, :].to(basis.mean.device, basis.mean.dtype)
    rows = torch.as_tensor(runs.problem)
    answer = cache.infos[runs.problem, 2]

    def score(plane: torch.Tensor) -> np.ndarray:
        vectors = plane_vectors(plane, basis, x, runs, cache.infos, letter, cache.p)
        return metric(engine.patched_logits(layer, rows, vectors), answer, runs.new_answer)

    circle = score(basis.plane)
    raw = np.zeros((len(CONTROL_KINDS), draws, len(runs)))
    for k, kind in enumerate(CONTROL_KINDS):
        for draw in range(draws):
            raw[k, draw] = score(random_plane(kind, basis, draw_seed(seed, layer, kind, draw)))
    return circle, raw
