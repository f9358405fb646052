"""Summarise a cluster reducibility scan: mean M against mean S per cluster, and the ranking of clusters.

    cd sae_multid_feature_discovery && python3 analyze_reducibilities.py            # GPT-2 layer 7, threshold 0, radius 0
    python3 analyze_reducibilities.py --scan_dir metrics --plain_mean

Reads every `<scan_dir>/<cluster>/*-metrics.json` written by gpt2_compute_reducibility.py, drops planes with
M < --min_mixture (0.01, as the original), and per cluster averages M and S over the kept planes. The figure
puts mean M on an inverted x axis and mean S on the y axis, the named clusters in orange. The ranking score
is the mean of [0] + [(1 - M) * S for kept planes] (the original's leading 0; --plain_mean drops it). Writes
`reducibility_metrics_threshold<t>_radius<r>.{pdf,png}`, `ranking.csv` and `summary.json` into one folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.config import positive_int
from multid.errors import UserError, cli_entry
from multid.sae.analysis import cluster_reducibility
from multid.sae.runners.script_args import add_model_layer_args
from multid.sae.runners.scan_ranking import run_ranking
from multid.sae.stage_configs import RankingConfig, parse_named

D = RankingConfig()


def named_cluster(text: str) -> str:
    """Checks CLUSTER:LABEL at parse time; the config keeps the text."""
    try:
        parse_named(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_layer_args(parser, D.model_name, D.layer)
    parser.add_argument("--run_dir", default=D.run_dir, help="SAE run folder (default: the one for model and layer)")
    parser.add_argument("--threshold", type=float, default=D.threshold, help="the scan's --threshold (default: 0.0)")
    parser.add_argument("--radius", type=float, default=D.radius, help="the scan's --radius (default: 0.0)")
    parser.add_argument("--clusters_file", default=D.clusters_file,
                        help="the cluster file that was scanned (default: the model's, as the scan script); "
                             "picks the default --scan_dir")
    parser.add_argument("--scan_dir", default=D.scan_dir,
                        help="folder of per-cluster results (default: <run_dir>/scan/<cluster file stem>/"
                             "threshold<t>radius<r>)")
    parser.add_argument("--min_mixture", type=float, default=D.min_mixture,
                        help="drop planes with M below this (default: %(default)s)")
    parser.add_argument("--mixture", choices=sorted(cluster_reducibility.MIXTURE_KEYS), default=D.mixture,
                        help="which M ranks the clusters: gradient = the original optimiser's value (the published "
                             "ranking; default) or exact = the maximum over every slab (docs/reducibility.md)")
    parser.add_argument("--score", choices=("paper", "calibrated"), default=D.score,
                        help="paper = the mean of (1 - M) * S over kept planes (default); calibrated = each "
                             "cluster's smallest Benjamini-Hochberg q of S against its Gaussian null over its kept "
                             "planes, then its largest z-score of S against that null (needs a scan with "
                             "--calibrate; docs/reducibility.md)")
    parser.add_argument("--plain_mean", action="store_true",
                        help="ranking score = plain mean of (1 - M) * S over kept planes (default: the original's "
                             "mean with a leading 0)")
    parser.add_argument("--named", type=named_cluster, nargs="*", default=D.named,
                        help="clusters to highlight, CLUSTER:LABEL (default for GPT-2: 138 weekdays, 251 months, "
                             "212 years)")
    parser.add_argument("--top", type=positive_int, default=D.top, help="print the top N clusters (default: 20)")
    parser.add_argument("--out_dir", default=D.out_dir, help="output folder (default: <scan_dir>/analysis)")
    return parser


def config_from_argv(argv: list[str] | None = None) -> RankingConfig:
    return config_from_args(RankingConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    return run_ranking(config_from_argv(argv)).out_dir


if __name__ == "__main__":
    main()
