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
import hashlib
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from multid.config import add_base_dir_arg, positive_int, resolve_base_dir
from multid.errors import UserError, cli_entry
from multid.sae import clustering
from multid.sae.clusters import write_clusters
from multid.sae.paths import canonical_model, clusters_dir, run_dir
from multid.stage import Stage, run_stage

MODEL_CHOICES = ("gpt-2", "gpt2", "mistral", "smollm2", "tiny")
DEFAULT_LAYER = {"gpt2": 7, "mistral": 8}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default=None, choices=MODEL_CHOICES,
                        help="model whose SAE is clustered (default: mistral, as upstream); with --decoder_file "
                             "it only checks the decoder's width and names the output folder")
    parser.add_argument("--layer", type=int, default=None, help="SAE layer (default: 7 for GPT-2, 8 for Mistral)")
    parser.add_argument("--method", "--clustering_type", dest="method", choices=clustering.METHODS, default="graph",
                        help="graph components or spectral clustering (default: %(default)s)")
    parser.add_argument("--decoder_file", default=None,
                        help="cluster this decoder instead of loading an SAE: .npy [F, d] or .npz with key W_dec")
    parser.add_argument("--sae_path", default=None, help="an SAE saved on disk (SAELens folder or the paper's .pt)")
    parser.add_argument("--include_only_first_k_sae_features", type=positive_int, default=None,
                        help="cluster only the first K decoder rows")
    parser.add_argument("--sim_cutoff", type=float, default=0.5,
                        help="graph: keep neighbours with cosine > cutoff (default: %(default)s)")
    parser.add_argument("--top_k", type=positive_int, default=2,
                        help="graph: neighbours per feature, counting the feature itself when --diagonal kept "
                             "(default: %(default)s, the paper's Mistral file)")
    parser.add_argument("--diagonal", choices=clustering.DIAGONALS, default="kept",
                        help="self-similarity kept (paper era, default) or zeroed (later upstream code)")
    parser.add_argument("--drop_singletons", action="store_true", help="graph: leave out one-feature components")
    parser.add_argument("--max_cluster_size", type=positive_int, default=None,
                        help="graph: leave out components with more features (the original's optional prune "
                             "dropped sizes >= 1000, i.e. 999)")
    parser.add_argument("--n_clusters", type=positive_int, default=1000,
                        help="spectral: number of clusters (default: %(default)s)")
    parser.add_argument("--eigen_solver", choices=("arpack", "lobpcg", "amg"), default=None,
                        help="spectral: scikit-learn eigensolver (default: arpack, as upstream; amg needs pyamg)")
    parser.add_argument("--assign_labels", choices=("kmeans", "discretize", "cluster_qr"), default="kmeans",
                        help="spectral: label assignment (default: %(default)s, as upstream)")
    parser.add_argument("--seed", type=int, default=0, help="spectral: random seed (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="output JSON (default: <base_dir>/sae/<model>_layer<L>_<sae>/clusters/<method>_...json)")
    parser.add_argument("--force", action="store_true", help="recompute even if the output is current")
    return parser


def options(args: argparse.Namespace) -> dict:
    if args.method == "graph":
        return {"top_k": args.top_k, "sim_cutoff": args.sim_cutoff, "diagonal": args.diagonal,
                "drop_singletons": args.drop_singletons, "max_size": args.max_cluster_size}
    return {"n_clusters": args.n_clusters, "seed": args.seed, "diagonal": args.diagonal,
            "eigen_solver": args.eigen_solver, "assign_labels": args.assign_labels}


def default_name(args: argparse.Namespace) -> str:
    first = f"_first{args.include_only_first_k_sae_features}" if args.include_only_first_k_sae_features else ""
    if args.method == "graph":
        drop = ("_nosingletons" if args.drop_singletons else "") + \
            (f"_max{args.max_cluster_size}" if args.max_cluster_size else "")
        return f"graph_topk{args.top_k}_cutoff{args.sim_cutoff}_diag{args.diagonal}{drop}{first}.json"
    extra = "".join(f"_{v}" for v in (args.eigen_solver, None if args.assign_labels == "kmeans" else args.assign_labels)
                    if v)
    return f"spectral_n{args.n_clusters}_seed{args.seed}_diag{args.diagonal}{extra}{first}.json"


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    model = canonical_model(args.model_name or "mistral")
    layer = args.layer if args.layer is not None else DEFAULT_LAYER.get(model, 0)
    W, tag, source = clustering.load_decoder_source(model, layer, decoder_file=args.decoder_file,
                                                    sae_path=args.sae_path,
                                                    check_width=not (args.decoder_file and args.model_name is None))
    if args.include_only_first_k_sae_features:
        if args.include_only_first_k_sae_features > W.shape[0]:
            raise UserError(f"--include_only_first_k_sae_features {args.include_only_first_k_sae_features} is more "
                            f"than the {W.shape[0]} features of {source}")
        W = np.ascontiguousarray(W[: args.include_only_first_k_sae_features])
    if not -1.0 <= args.sim_cutoff <= 1.0:  # also catches NaN
        raise UserError(f"--sim_cutoff is a cosine and must lie in [-1, 1], got {args.sim_cutoff}")
    zero = np.flatnonzero(~np.any(W != 0, axis=1))
    if len(zero):
        raise UserError(f"{source} has {len(zero)} all-zero decoder row(s) (features {', '.join(map(str, zero[:5]))}"
                        f"{' ...' if len(zero) > 5 else ''}); their cosine with any feature is undefined: drop them "
                        f"from the decoder file before clustering")
    if args.method == "spectral" and args.n_clusters > W.shape[0]:
        raise UserError(f"--n_clusters {args.n_clusters} is more than the {W.shape[0]} features clustered")
    out = Path(args.out).expanduser().resolve() if args.out else \
        clusters_dir(run_dir(resolve_base_dir(args.base_dir), model, layer, tag)) / default_name(args)
    settings = {"method": args.method, **options(args), "num_features": int(W.shape[0]), "d": int(W.shape[1]),
                "decoder_sha1": hashlib.sha1(memoryview(W)).hexdigest()}
    command = "python sae_multid_feature_discovery/clustering.py " + " ".join(sys.argv[1:] if argv is None else argv)
    stage = Stage(f"{args.method} clusters of {source}", out, settings, command=command)

    def build(tmp: Path) -> None:
        clusters = clustering.cluster_decoder(W, args.method, **options(args),
                                              **({"progress": True} if args.method == "graph" else {}))
        write_clusters(tmp, clusters)
        sizes = np.array([len(c) for c in clusters])
        print(f"{len(clusters)} clusters, {int((sizes > 1).sum())} with more than one feature, "
              f"largest {int(sizes.max()) if len(sizes) else 0}")

    run_stage(stage, build, force=args.force)
    print("wrote:")
    print(f"  {out}")
    return out


if __name__ == "__main__":
    main()
