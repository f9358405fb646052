"""Interactive figure of one Mistral-7B SAE cluster (paper section 4.1), the same figure as
gpt2_interactive_figure.py, with the Mistral defaults (layer 8, cluster 61 = the days cluster).

    cd sae_multid_feature_discovery && python3 mistral_interactive_figure.py --cluster 61    # days
    python -m sae_multid_feature_discovery.mistral_interactive_figure --cluster 832          # months

--cluster numbers the clusters with more than one member (--cluster_convention non_singleton, as the paper's
figure script did: with the paper's file mistral_layer_8_clusters_cutoff_0.5.pkl, 61 is the days cluster;
in the full list, 61 is a singleton). The script prints which numbering it used.
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
from multid.sae.stage_configs import MistralInteractiveConfig


def build_parser():
    return interactive_parser(MistralInteractiveConfig(), __doc__.split("\n\n")[0])


def config_from_argv(argv: list[str] | None = None) -> MistralInteractiveConfig:
    return config_from_args(MistralInteractiveConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    result = run_interactive(config_from_argv(argv))
    return [result.html, result.pca]


if __name__ == "__main__":
    main()
