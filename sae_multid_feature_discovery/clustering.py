"""Cluster an SAE's decoder directions (paper section 4.1) into a JSON list of clusters of feature indices.

    cd sae_multid_feature_discovery && python3 clustering.py --model_name gpt-2 --layer 7 --method spectral
    python3 clustering.py --model_name mistral --layer 8 --method graph --top_k 2 --sim_cutoff 0.5 --diagonal kept
    python3 clustering.py --decoder_file W.npz --method graph --out clusters.json

--method graph (default): top-k neighbours above --sim_cutoff, connected components (exact kNN with FAISS,
in blocks: a 65,536 x 4,096 decoder stays near 2 GB). --method spectral: angular affinity and scikit-learn
SpectralClustering (ARPACK + k-means as upstream, seeded, float32 affinity). --clustering_type is an alias of
--method (the upstream README's name). The decoder comes from the SAE (SAELens release, the paper's Mistral
.pt, or --sae_path) or from --decoder_file (.npy, or .npz with key W_dec). Clusters are written with members
ascending, ordered by smallest member; every component, singletons included, unless --drop_singletons.
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
from multid.sae.runners.decoder_clustering import MODEL_CHOICES, ClusteringResult, run_clustering
from multid.sae.stage_configs import ClusteringConfig

D = ClusteringConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default=D.model_name, choices=MODEL_CHOICES,
                        help="model whose SAE is clustered (default: mistral, as upstream); with --decoder_file "
                             "it only checks the decoder's width and names the output folder")
    parser.add_argument("--layer", type=int, default=D.layer, help="SAE layer (default: 7 for GPT-2, 8 for Mistral)")
    parser.add_argument("--method", "--clustering_type", dest="method", choices=clustering_methods.METHODS, default=D.method,
                        help="graph components or spectral clustering (default: %(default)s)")
    parser.add_argument("--decoder_file", default=D.decoder_file,
                        help="cluster this decoder instead of loading an SAE: .npy [F, d] or .npz with key W_dec")
    parser.add_argument("--sae_path", default=D.sae_path,
                        help="an SAE saved on disk (SAELens folder or the paper's .pt)")
    parser.add_argument("--include_only_first_k_sae_features", type=positive_int,
                        default=D.include_only_first_k_sae_features, help="cluster only the first K decoder rows")
    parser.add_argument("--sim_cutoff", type=float, default=D.sim_cutoff,
                        help="graph: keep neighbours with cosine > cutoff (default: %(default)s)")
    parser.add_argument("--top_k", type=positive_int, default=D.top_k,
                        help="graph: neighbours per feature, counting the feature itself when --diagonal kept "
                             "(default: %(default)s, the paper's Mistral file)")
    parser.add_argument("--diagonal", choices=clustering_methods.DIAGONALS, default=D.diagonal,
                        help="self-similarity kept (paper era, default) or zeroed (later upstream code)")
    parser.add_argument("--drop_singletons", action="store_true", help="graph: leave out one-feature components")
    parser.add_argument("--max_cluster_size", type=positive_int, default=D.max_cluster_size,
                        help="graph: leave out components with more features (the original's optional prune "
                             "dropped sizes >= 1000, i.e. 999)")
    parser.add_argument("--n_clusters", type=positive_int, default=D.n_clusters,
                        help="spectral: number of clusters (default: %(default)s)")
    parser.add_argument("--eigen_solver", choices=("arpack", "lobpcg", "amg"), default=D.eigen_solver,
                        help="spectral: scikit-learn eigensolver (default: arpack, as upstream; amg needs pyamg)")
    parser.add_argument("--assign_labels", choices=("kmeans", "discretize", "cluster_qr"), default=D.assign_labels,
                        help="spectral: label assignment (default: %(default)s, as upstream)")
    parser.add_argument("--seed", type=int, default=D.seed, help="spectral: random seed (default: %(default)s)")
    parser.add_argument("--out", default=D.out,
                        help="output JSON (default: <base_dir>/sae/<model>_layer<L>_<sae>/clusters/<method>_...json)")
    parser.add_argument("--force", action="store_true", help="recompute even if the output is current")
    return parser


def config_from_argv(argv: list[str] | None = None) -> ClusteringConfig:
    return config_from_args(ClusteringConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> ClusteringResult:
    return run_clustering(config_from_argv(argv))


if __name__ == "__main__":
    main()
