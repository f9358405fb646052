"""Mixture index M and separability index S on the PCA planes of a cluster's reconstructions (paper section 4.2).

    cd sae_multid_feature_discovery && python3 gpt2_compute_reducibility.py --cluster 138
    python3 gpt2_compute_reducibility.py --clusters all --save_dir metrics     # every cluster, one batched run

Per cluster: the first --sample_limit reconstructions, PCA(min(5, size)), and for each consecutive pair of
components M (eps = --epsilon; T = 1, hard fraction; start direction seeded: plane p uses seed + p) and S
(bits); beside M, the exact maximum (--mixture exact: the exact M alone, many times faster). Points with plane norm <= --radius are dropped per plane; only activations > --threshold count.
Writes `<save_dir>/<cluster>/gpt2-layer7-cluster<C>-threshold<t>-radius<r>-metrics.json` ({"0-1":
{"mixture_index": M, "separability_index": S}, ...}) and the figure `.png` beside it; each cluster is its own
stage, so `--clusters all` resumes after an interruption. --activations_file names the run folder of the
occurrence dataset (ours is a Parquet folder, not the original's .npz). --device cuda runs the engine on
a GPU (a whole-SAE scan is hours of CPU time at the original's 10,000 steps and 20,000 points per plane).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.config import add_device_arg, positive_int
from multid.errors import cli_entry
from multid.sae.data.cluster_files import CONVENTIONS
from multid.sae.runners.script_args import add_model_layer_args
from multid.sae.runners.reducibility_scan import ScanResult, run_scan
from multid.sae.stage_configs import ScanConfig

D = ScanConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_layer_args(parser, D.model_name, D.layer)
    parser.add_argument("--clusters_file", default=D.clusters_file,
                        help="cluster file, our JSON or the paper's pickle (default: the paper's GPT-2 file, in the "
                             "current folder or <run_dir>/clusters/)")
    parser.add_argument("--cluster", type=int, default=D.cluster, help="cluster index (default: %(default)s, days)")
    parser.add_argument("--clusters", default=D.clusters, choices=["all"],
                        help="all: scan every cluster with 2..--size_limit features in one batched run")
    parser.add_argument("--cluster_convention", choices=CONVENTIONS, default=D.cluster_convention,
                        help="how --cluster numbers clusters: all = the full list (the original GPT-2 scripts; "
                             "default), non_singleton = after dropping one-feature clusters (the Mistral figures)")
    parser.add_argument("--activations_file", "--run_dir", dest="run_dir", default=D.run_dir,
                        help="run folder holding the occurrence dataset (default: the one "
                             "<base_dir>/sae/<model>_layer<L>_* folder)")
    parser.add_argument("--decoder_file", default=D.decoder_file,
                        help="decoder .npy, or .npz with key W_dec (default: <run_dir>/decoder.npy)")
    parser.add_argument("--size_limit", type=positive_int, default=D.size_limit,
                        help="refuse (or, with --clusters all, skip) clusters with more features (default: 1000)")
    parser.add_argument("--sample_limit", type=positive_int, default=D.sample_limit,
                        help="first N reconstructions in corpus order (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=D.threshold, help="activation threshold (default: 0.0)")
    parser.add_argument("--radius", type=float, default=D.radius,
                        help="drop points with norm <= radius in each plane (default: 0.0)")
    parser.add_argument("--epsilon", type=float, default=D.epsilon, help="slab half-width of M (default: 0.1)")
    parser.add_argument("--seed", type=int, default=D.seed, help="seed of M's start directions (default: 0)")
    parser.add_argument("--steps", type=positive_int, default=D.steps,
                        help="gradient-ascent steps of M (default: 10000, as the original)")
    parser.add_argument("--mixture", choices=("both", "exact"), default=D.mixture,
                        help="both (default): the original's gradient M (\"mixture_index\") and the exact maximum "
                             "beside it (\"mixture_index_exact\"); exact: the exact M alone, skipping the "
                             "gradient engine (the fast whole-SAE scan; rank with analyze_reducibilities.py "
                             "--mixture exact)")
    add_device_arg(parser, default=D.device)
    parser.add_argument("--no_figures", action="store_true", help="write only the metrics JSON")
    parser.add_argument("--calibrate", action="store_true",
                        help="also place every plane's S and exact M against Gaussian clouds of its size and shape "
                             "(p-value of S, z-score of M; docs/reducibility.md); analyze_reducibilities.py "
                             "--score calibrated ranks by it")
    parser.add_argument("--null_draws", type=positive_int, default=D.null_draws,
                        help="Gaussian clouds per null with --calibrate (default: %(default)s; the smallest "
                             "p-value is 1 / (draws + 1))")
    parser.add_argument("--group_size", type=positive_int, default=D.group_size,
                        help="clusters per occurrence read and engine batch (default: %(default)s)")
    parser.add_argument("--save_dir", default=D.save_dir,
                        help="output folder (default: <run_dir>/scan/<cluster file stem>/threshold<t>radius<r>)")
    parser.add_argument("--force", action="store_true", help="recompute clusters even if current")
    return parser


def config_from_argv(argv: list[str] | None = None) -> ScanConfig:
    return config_from_args(ScanConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    result: ScanResult = run_scan(config_from_argv(argv))
    return result.written


if __name__ == "__main__":
    main()
