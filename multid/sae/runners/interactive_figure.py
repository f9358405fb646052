"""The interactive figure of one SAE cluster (paper section 4.1) as one stage: config, runner, result.

The scripts are sae_multid_feature_discovery/gpt2_interactive_figure.py and mistral_interactive_figure.py (one
implementation, the original scripts' defaults each); the figure is multid.sae.figures.interactive_html's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multid.config import print_written
from multid.paper import sae_model_title
from multid.sae.data.tokenizers import hover_texts
from multid.sae.figures import interactive_html
from multid.sae.figures.figure_context import CONVENTION_HELP, open_context
from multid.sae.stage_configs import InteractiveConfig


@dataclass(frozen=True)
class InteractiveResult:
    html: Path
    pca: Path  # the cluster's reconstructions' PCA, for compare_circle_intervention_types.py --sae_pca


def run_interactive(config: InteractiveConfig) -> InteractiveResult:
    """Reconstructions + PCA of one cluster (saved for --sae_pca), and its interactive html figure."""
    ctx = open_context(config)
    members = ctx.pick(config.cluster)
    print(f"cluster {config.cluster} of {ctx.clusters_file.name}, numbered {config.cluster_convention!r} "
          f"({CONVENTION_HELP[config.cluster_convention]}): {len(members)} features {members}")
    points = ctx.points(config.cluster, members, interactive_html.num_pcs(len(members)), config.command())
    hover = hover_texts(ctx.tokenizer(), points.context_lists())
    rows = ctx.W_dec[np.asarray(members, dtype=np.int64)]
    model = config.model
    title = interactive_html.figure_title(sae_model_title(model), config.layer, config.cluster, len(members),
                                          len(points.tokens))
    fig = interactive_html.build_interactive_figure(rows, points.pca, hover, title)
    html = interactive_html.write_html(fig, ctx.save_dir / f"{model}-layer{config.layer}-cluster{config.cluster}.html")
    print(f"{len(points.tokens)} reconstructions; explained variance of PCs 0..{points.pca.k - 1}: "
          + ", ".join(f"{r:.3f}" for r in points.pca.explained_variance_ratio))
    print(f"SAE PCA for compare_circle_intervention_types.py --sae_pca: {points.path}")
    print_written([html, points.path])
    return InteractiveResult(html, points.path)
