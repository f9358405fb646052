"""More evidence for the days circle (paper rebuttal, `other_circle_points.py`): where do prompts that are not
plain day names land in the plane of the day-name circle?

Experiment 1: the 7 day names, then "morning on <Day>" and "evening on <Day>"; experiment 2: the day names,
then "very early on <Day>" and "very late on <Day>" (21 prompts each). The hidden state is the residual stream
after `layer` blocks (Hugging Face `hidden_states[layer]`; the paper used layer 30 of Mistral-7B) at the last
position; a PCA is fit on the 7 plain day names only and all 21 prompts are projected on its first two PCs.
A third experiment, "Approximately two months from <Month>" for the 12 months and 4 seasons at layer 12, fits
its PCA on the 12 months. We take the residual before the final norm at every layer (for the last layer
Hugging Face's hidden state has the final norm applied; nothing else differs).

Fixed against the original script: experiment 1's points were labelled with experiment 2's words and vice
versa; the months experiment left its inputs on the CPU while the model was on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from multid.errors import UserError
from multid.sae.data.token_labels import DAY_NAMES, MONTH_NAMES

PAPER_LAYERS = {"days": 30, "months": 12}  # Mistral-7B (32 blocks)
PAPER_BLOCKS = 32
EXPERIMENTS = {1: ("morning", "evening"), 2: ("very early", "very late")}
SEASON_WORDS = ("Winter", "Spring", "Summer", "Fall")


@dataclass(frozen=True)
class PromptSet:
    """Prompts with a class (day or month index) and a group name (e.g. "day name", "morning") each."""

    prompts: list[str]
    classes: list[int]
    groups: list[str]
    fit_group: str  # the group the PCA is fit on


def weekday_prompts(experiment: int) -> PromptSet:
    if experiment not in EXPERIMENTS:
        raise UserError(f"experiment {experiment} does not exist; allowed: {', '.join(map(str, EXPERIMENTS))}")
    prompts, classes, groups = list(DAY_NAMES), list(range(7)), ["day name"] * 7
    for modifier in EXPERIMENTS[experiment]:
        prompts += [f"{modifier} on {day}" for day in DAY_NAMES]
        classes += list(range(7))
        groups += [modifier] * 7
    return PromptSet(prompts, classes, groups, "day name")


def month_prompts() -> PromptSet:
    prompts = [f"Approximately two months from {m}" for m in MONTH_NAMES + SEASON_WORDS]
    return PromptSet(prompts, list(range(16)), ["month"] * 12 + ["season"] * 4, "month")


def default_layer(kind: str, n_layers: int) -> int:
    """The paper's layer (30 for days, 12 for months, of 32 blocks) scaled to a model with n_layers blocks."""
    return max(1, min(n_layers, round(PAPER_LAYERS[kind] * n_layers / PAPER_BLOCKS)))


def hook_for_layer(layer: int, n_layers: int) -> str:
    """TransformerLens hook of Hugging Face's hidden_states[layer]: 0 = embeddings, L = after block L - 1."""
    if not 0 <= layer <= n_layers:
        raise UserError(f"--layer {layer} is out of range for a model with {n_layers} blocks (allowed 0..{n_layers})")
    return "hook_embed" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


def last_position_states(model: Any, prompts: Sequence[str], layer: int) -> np.ndarray:
    """[len(prompts), d] residual stream at `layer`, last position of each prompt (BOS prepended), float64."""
    import torch

    hook = hook_for_layer(layer, model.cfg.n_layers)
    # prompts of equal token length run as one batch (no padding, so each row equals its own single run)
    tokenised = [model.to_tokens(prompt) for prompt in prompts]  # on the model's device (the original forgot
    by_length: dict[int, list[int]] = {}                        # this for the months prompts)
    for i, tokens in enumerate(tokenised):
        by_length.setdefault(int(tokens.shape[1]), []).append(i)
    rows: list[np.ndarray | None] = [None] * len(prompts)
    with torch.no_grad():
        for members in by_length.values():
            batch = torch.cat([tokenised[i] for i in members], dim=0)
            _, cache = model.run_with_cache(batch, names_filter=hook)
            last = cache[hook][:, -1].float().cpu().numpy().astype(np.float64)
            for row, i in zip(last, members):
                rows[i] = row
    return np.stack(rows)


@dataclass(frozen=True)
class Projection:
    prompts: PromptSet
    coords: np.ndarray  # [n, 2] on the PCs fit on the fit group
    explained_variance_ratio: np.ndarray  # of the fit group's PCA (up to 5 PCs)
    layer: int


def project(states: np.ndarray, prompts: PromptSet, layer: int, k: int = 5) -> Projection:
    """PCA(k) fit on the fit group's states (exact SVD); every state projected on its first two PCs."""
    from multid.sae.analysis.reconstructions import reconstruction_pca

    fit = np.array([g == prompts.fit_group for g in prompts.groups])
    pca = reconstruction_pca(states[fit], k)
    coords = (states - pca.mean) @ pca.components[:2].T
    return Projection(prompts, coords, pca.explained_variance_ratio, layer)


def weekday_figure(proj: Projection, paper_limits: bool = False):
    """PC1/PC2 scatter: day names as large dots, the two modified groups as squares / triangles, twilight colours
    by day, cross-hair axes, y inverted (as the original)."""
    import matplotlib
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.2, 1.8))
    cmap = matplotlib.colormaps["twilight"]
    groups = list(dict.fromkeys(proj.prompts.groups))
    markers = {groups[0]: "o", **{g: m for g, m in zip(groups[1:], ("s", "^"))}}
    sizes = {groups[0]: 100, **{g: 70 for g in groups[1:]}}
    classes = np.array(proj.prompts.classes)
    for group in groups:
        sel = np.array([g == group for g in proj.prompts.groups])
        n_cls = 7 if proj.prompts.fit_group == "day name" else 16
        colours = [cmap(c / n_cls) for c in classes[sel]]
        label = "Day name" if group == "day name" else f"{group.capitalize()} on day"
        ax.scatter(proj.coords[sel, 0], proj.coords[sel, 1], c=colours, marker=markers[group], s=sizes[group] / 4,
                   edgecolors="black", linewidths=0.3, label=label)
    for i, name in enumerate(proj.prompts.prompts[:7]):
        ax.annotate(name[:3], proj.coords[i], fontsize=4, ha="center", va="center")
    ax.axhline(0, color="grey", linewidth=0.4)
    ax.axvline(0, color="grey", linewidth=0.4)
    if paper_limits:
        ax.set_xlim(-8, 13)
        ax.set_ylim(-10, 10)
    ax.invert_yaxis()
    ax.set_xlabel("PC1", fontsize=5)
    ax.set_ylabel("PC2", fontsize=5)
    ax.tick_params(labelsize=4)
    ax.legend(fontsize=4, markerscale=0.5, loc="best")
    fig.tight_layout(pad=0.3)
    return fig


def month_figure(proj: Projection):
    import matplotlib
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.6, 2.2))
    cmap = matplotlib.colormaps["twilight"]
    for i, prompt in enumerate(proj.prompts.prompts):
        season = proj.prompts.groups[i] == "season"
        ax.scatter(*proj.coords[i], color=cmap(i / 12) if not season else "black", marker="^" if season else "o", s=20)
        ax.annotate(prompt.rsplit(" ", 1)[-1][:3], proj.coords[i], fontsize=4)
    ax.set_title("Approximately two months from ...", fontsize=6)
    ax.tick_params(labelsize=4)
    fig.tight_layout(pad=0.3)
    return fig
