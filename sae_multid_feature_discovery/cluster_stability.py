"""Cluster stability: best Jaccard of the paper's Mistral days / months clusters across graph-clustering settings.

    cd sae_multid_feature_discovery && python3 cluster_stability.py --sae_path saes/mistral_saes
    python3 cluster_stability.py --decoder_file W.npz --clusters_file clusters.json --truth 3 7 --truth_names A B

For every (top_k, cutoff) of the sweep (default k = 2, 3, 4 and 21 cutoffs: 20 values logspace(-1, 0) plus
0.5, self-similarity zeroed, as the rebuttal's sweep) the decoder is clustered by the graph method (one exact
neighbour search shared by all settings) and each ground-truth cluster gets max over clusters C of
|G & C| / |G | C|. Writes per ground-truth cluster a heat map (cutoffs down, k across), the cluster-size
histograms of the sweep, within-cluster cosine maps of the ground-truth clusters (the original drew these
from an overwritten variable; here they are the ground-truth clusters), and stability.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.config import add_base_dir_arg, positive_int
from multid.errors import cli_entry
from multid.sae.analysis import clustering_methods
from multid.sae.data.cluster_files import CONVENTIONS
from multid.sae.runners.stability_sweep import run_stability
from multid.sae.stage_configs import StabilityConfig

D = StabilityConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default=D.model_name,
                        help="model of the SAE (default: mistral); with --decoder_file it only checks the width")
    parser.add_argument("--layer", type=int, default=D.layer, help="SAE layer (default: %(default)s)")
    parser.add_argument("--sae_path", default=None, help="the SAE on disk (SAELens folder or the paper's .pt)")
    parser.add_argument("--decoder_file", default=None, help="decoder .npy, or .npz with key W_dec, instead of the SAE")
    parser.add_argument("--clusters_file", default=D.clusters_file,
                        help="ground-truth cluster file (default: %(default)s, the paper's Mistral file)")
    parser.add_argument("--truth", type=int, nargs="+", default=list(D.truth),
                        help="ground-truth cluster indices (default: 61 832 = days, months)")
    parser.add_argument("--truth_names", nargs="+", default=None,
                        help="their names in titles (default: 'Days of Week' 'Months' for 61 832)")
    parser.add_argument("--cluster_convention", choices=CONVENTIONS, default=D.cluster_convention,
                        help="numbering of --truth (default: %(default)s, as the original)")
    parser.add_argument("--top_k", type=positive_int, nargs="+", default=list(D.top_k),
                        help="k values of the sweep (default: 2 3 4)")
    parser.add_argument("--cutoffs", type=float, nargs="+", default=None,
                        help="cutoffs of the sweep (default: logspace(-1, 0, 20) and 0.5)")
    parser.add_argument("--diagonal", choices=clustering_methods.DIAGONALS, default=D.diagonal,
                        help="self-similarity convention of the sweep (default: zeroed, as the rebuttal's code)")
    parser.add_argument("--hand_cluster", type=int, nargs="*", default=None,
                        help="an extra feature list for the cosine maps (default for Mistral: the days cluster "
                             "plus feature 53172)")
    parser.add_argument("--save_dir", default=None,
                        help="output folder (default: <base_dir>/sae/<model>_layer<L>_<sae>/clusters/stability)")
    return parser


def config_from_argv(argv: list[str] | None = None) -> StabilityConfig:
    return config_from_args(StabilityConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    return run_stability(config_from_argv(argv))


if __name__ == "__main__":
    main()
