"""The paper's calendar-cluster figures as stages: Figures 1 and 12 (GPT-2 days / months / years) and Figure 13
(Mistral days / months), and the rebuttal grid of the top clusters (config, runner, written files).

The scripts are gpt2_days_months_years.py (and its alias gpt2_days_weeks_years.py), mistral_days_months.py and
explore_features.py; the panels are multid.sae.figures.cluster_panels'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from multid.config import print_written
from multid.errors import MissingArtifactError, UserError
from multid.io import load_json, save_figure
from multid.sae.data import token_labels as L
from multid.sae.figures import cluster_panels as P
from multid.sae.data import run_layout
from multid.sae.analysis.cluster_points import ClusterPoints
from multid.sae.figures.figure_context import RunContext, open_context
from multid.sae.stage_configs import DaysMonthsYearsConfig, ExploreConfig, MistralDaysMonthsConfig, RankingConfig
from multid.sae.data.tokenizers import token_strings

# The paper's top-20 GPT-2 layer-7 clusters of the reducibility ranking, with the authors' rough descriptions.
PAPER_TOP20 = {23: "Letter 'B'", 28: "Letter 'M'", 58: "Substring 'Re'", 32: "Letter 'G'", 34: "Letter 'H'",
               93: "Letter 'T'", 46: "Letter 'D'", 13: "Substring 'Al'", 138: "Days of Week", 96: "Token 'Such'",
               65: "Letter 'N'", 2: "Token/Concept 'There'", 68: "'Trying'", 7: "Concept 'Formerly'",
               212: "Years of 20th Century", 157: "Years of 21st Century", 8: "Substring 'Un'", 101: "Letter 'A'",
               173: "Word 'So'", 209: "Concept 'Person'"}


def firing_strings(points: ClusterPoints, tokenizer: Any) -> list[str]:
    return token_strings(tokenizer, points.firing_token_ids())


def calendar_panel(ctx: RunContext, name: str, index: int, command: str) -> ClusterPoints:
    members = ctx.pick(index)
    print(f"{name}: cluster {index} ({ctx.args.cluster_convention} numbering), {len(members)} features {members}")
    return ctx.points(index, members, min(5, len(members)), command)


def run_days_months_years(config: DaysMonthsYearsConfig) -> list[Path]:
    """Figures 1 (gpt2nonlinears) and 12 (gpt2nonlinears3projs) from the days / months / years clusters."""
    ctx = open_context(config)
    tokenizer = ctx.tokenizer()
    panels = {}
    for name, index in (("days", config.days), ("months", config.months), ("years", config.years)):
        points = calendar_panel(ctx, name, index, config.command())
        strings = firing_strings(points, tokenizer)
        if name == "days":
            labels = L.map_labels(strings, L.DAY_TOKENS)
        elif name == "months":
            labels = L.map_labels(strings, L.MONTH_TOKENS)
        else:
            labels = L.year_labels(strings, stale_colours=config.stale_year_colours)
        panels[name] = P.Panel(points.pca.coords, labels)
        print(f"  {len(points.tokens)} points, grey (other) fraction {panels[name].grey_fraction:.3f}")
    written = []
    for stem, make in (("gpt2nonlinears", P.figure1), ("gpt2nonlinears3projs", P.figure12)):
        fig = make(panels["days"], panels["months"], panels["years"])
        for fmt in config.formats:
            written.append(save_figure(fig, ctx.save_dir / f"{stem}.{fmt}", dpi=300))
        plt.close(fig)
    print(f"fraction of grey points in the days panel: {panels['days'].grey_fraction:.4f}")
    print_written(written)
    return written


def run_mistral_days_months(config: MistralDaysMonthsConfig) -> list[Path]:
    """Figure 13 (mistral7bnonlinears) from the Mistral days and months clusters."""
    ctx = open_context(config)
    tokenizer = ctx.tokenizer()
    panels = {}
    for name, index, mapping in (("days", config.days, L.MISTRAL_DAY_TOKENS),
                                 ("months", config.months, L.MISTRAL_MONTH_TOKENS)):
        points = calendar_panel(ctx, name, index, config.command())
        panels[name] = P.Panel(points.pca.coords, L.map_labels(firing_strings(points, tokenizer), mapping))
        print(f"  {len(points.tokens)} points; PCA saved to {points.path}")
    fig = P.figure13(panels["days"], panels["months"])
    written = [save_figure(fig, ctx.save_dir / f"mistral7bnonlinears.{fmt}", dpi=300) for fmt in config.formats]
    plt.close(fig)
    print(f"fraction of grey points in the days panel: {panels['days'].grey_fraction:.4f}")
    print_written(written)
    return written


def read_ranking(path: str | Path, top: int) -> list[int]:
    """The first `top` cluster ids of a ranking JSON (formats in explore_features.py's --ranking help)."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError("cluster ranking", path, RankingConfig().command())
    data = load_json(path)
    if isinstance(data, dict):
        data = data.get("ranking")
    ids = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            item = item.get("cluster", item.get("cluster_id"))
        if isinstance(item, bool) or not isinstance(item, int):
            raise UserError(f"{path}: ranking entry {item!r} is not a cluster id; expected a list of ints or of "
                            f"objects with 'cluster'")
        ids.append(item)
    if not ids:
        raise UserError(f"{path} holds no ranking (a list of cluster ids, or objects with 'cluster')")
    return ids[:top]


def grid_entry(ctx: RunContext, config: ExploreConfig, rank: int, index: int, tokenizer: Any,
               known: dict[int, str]) -> P.GridEntry | None:
    """One cluster's column of the grid; None (with a note) when it has fewer than 4 principal components."""
    members = ctx.pick(index)
    k = min(5, len(members))
    if k < 4:
        print(f"cluster {index} (rank {rank}): {len(members)} features -> fewer than 4 PCs, skipped")
        return None
    points = ctx.points(index, members, k, config.command())
    if points.pca.k < 4:
        print(f"cluster {index} (rank {rank}): only {points.pca.k} PCs from {len(points.tokens)} points, skipped")
        return None
    current = token_strings(tokenizer, points.firing_token_ids())
    nxt = points.next_ids
    following = ["(end)"] * len(nxt)
    for i, text in zip(np.flatnonzero(nxt >= 0), token_strings(tokenizer, nxt[nxt >= 0])):
        following[i] = text
    label = known.get(index, "")
    title = f"Cluster {index} (Rank {rank})" + (f", Rough Description: {label}" if label else "")
    print(f"cluster {index} (rank {rank}): {len(members)} features, {len(points.tokens)} points")
    return P.GridEntry(title, points.pca.coords, points.pca.explained_variance_ratio, current, following)


def run_explore(config: ExploreConfig) -> list[Path]:
    """The rebuttal grid over the top clusters: PC pairs coloured by the firing and by the next token."""
    ids = list(config.clusters) if config.clusters else \
        (read_ranking(config.ranking, config.top) if config.ranking else list(PAPER_TOP20))
    ctx = open_context(config)
    tokenizer = ctx.tokenizer()
    known = PAPER_TOP20 if run_layout.canonical_model(config.model_name) == "gpt2" and config.layer == 7 else {}
    entries = []
    for rank, index in enumerate(ids, start=1):
        entry = grid_entry(ctx, config, rank, index, tokenizer, known)
        if entry is not None:
            entries.append(entry)
        if len(entries) == config.panels:
            break
    if not entries:
        raise UserError(f"none of the clusters {ids} has at least 4 principal components to draw")
    fig = P.explore_grid(entries)
    written = [save_figure(fig, ctx.save_dir / "all_clusters_grid.png", dpi=config.dpi)]
    plt.close(fig)
    print_written(written)
    return written
