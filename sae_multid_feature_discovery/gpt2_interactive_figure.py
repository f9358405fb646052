"""Interactive figure of one GPT-2 SAE cluster (paper section 4.1): decoder cosines, singular values, and the
PCA of the cluster's reconstructions with each point's context on hover. Also writes the cluster's PCA for
`compare_circle_intervention_types.py --sae_pca`.

    cd sae_multid_feature_discovery && python3 gpt2_interactive_figure.py --cluster 138   # days
    python -m sae_multid_feature_discovery.gpt2_interactive_figure --cluster 251             # months

Needs the occurrence dataset (generate_feature_occurence_data.py --model_name gpt2 --layers 7) and a cluster
file (default: the paper's gpt-2_layer_7_clusters_spectral_n1000.pkl in the current folder). The html is
self-contained and opens offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.errors import cli_entry
from multid.sae.runners.script_args import interactive_parser
from multid.sae.runners.interactive_figure import run_interactive
from multid.sae.stage_configs import InteractiveConfig


def build_parser():
    return interactive_parser(InteractiveConfig(), __doc__.split("\n\n")[0])


def config_from_argv(argv: list[str] | None = None) -> InteractiveConfig:
    return config_from_args(InteractiveConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    result = run_interactive(config_from_argv(argv))
    return [result.html, result.pca]


if __name__ == "__main__":
    main()
