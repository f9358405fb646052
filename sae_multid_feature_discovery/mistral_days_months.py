"""Figure 13 of the paper: the Mistral-7B layer-8 days (cluster 61) and months (832) clusters' reconstructions
on PCs 2 and 3, coloured by the firing token (clusters numbered among the non-singletons, as the paper did).

    cd sae_multid_feature_discovery && python3 mistral_days_months.py
    python -m sae_multid_feature_discovery.mistral_days_months --clusters_file mistral_layer_8_clusters_cutoff_0.5.pkl

Writes mistral7bnonlinears.png under --save_dir (default <run_dir>/figs) and the two clusters' PCA files
(readable by compare_circle_intervention_types.py --sae_pca); prints the member lists and the grey fraction.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.errors import cli_entry
from multid.sae.runners.script_args import mistral_dm_parser
from multid.sae.runners.calendar_figures import run_mistral_days_months
from multid.sae.stage_configs import MistralDaysMonthsConfig


def build_parser():
    return mistral_dm_parser(__doc__.split("\n\n")[0])


def config_from_argv(argv: list[str] | None = None) -> MistralDaysMonthsConfig:
    return config_from_args(MistralDaysMonthsConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    return run_mistral_days_months(config_from_argv(argv))


if __name__ == "__main__":
    main()
