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
import hashlib
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import add_base_dir_arg, positive_int, resolve_base_dir
from multid.errors import MissingArtifactError, UserError, cli_entry
from multid.io import save_figure, save_json
from multid.sae import clustering, stability
from multid.sae.clusters import CONVENTIONS, check_members, load_clusters, pick_cluster
from multid.sae.paths import canonical_model, clusters_dir, run_dir
from multid.stage import Stage, run_stage

DEFAULT_CLUSTERS_FILE = "mistral_layer_8_clusters_cutoff_0.5.pkl"
HAND_CLUSTER = [398, 53172, 31484, 35234, 54166, 52464, 20629, 23936]  # days cluster + feature 53172


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default=None,
                        help="model of the SAE (default: mistral); with --decoder_file it only checks the width")
    parser.add_argument("--layer", type=int, default=8, help="SAE layer (default: %(default)s)")
    parser.add_argument("--sae_path", default=None, help="the SAE on disk (SAELens folder or the paper's .pt)")
    parser.add_argument("--decoder_file", default=None, help="decoder .npy, or .npz with key W_dec, instead of the SAE")
    parser.add_argument("--clusters_file", default=DEFAULT_CLUSTERS_FILE,
                        help="ground-truth cluster file (default: %(default)s, the paper's Mistral file)")
    parser.add_argument("--truth", type=int, nargs="+", default=[61, 832],
                        help="ground-truth cluster indices (default: 61 832 = days, months)")
    parser.add_argument("--truth_names", nargs="+", default=None,
                        help="their names in titles (default: 'Days of Week' 'Months' for 61 832)")
    parser.add_argument("--cluster_convention", choices=CONVENTIONS, default="non_singleton",
                        help="numbering of --truth (default: %(default)s, as the original)")
    parser.add_argument("--top_k", type=positive_int, nargs="+", default=list(stability.UPSTREAM_TOP_KS),
                        help="k values of the sweep (default: 2 3 4)")
    parser.add_argument("--cutoffs", type=float, nargs="+", default=None,
                        help="cutoffs of the sweep (default: logspace(-1, 0, 20) and 0.5)")
    parser.add_argument("--diagonal", choices=clustering.DIAGONALS, default="zeroed",
                        help="self-similarity convention of the sweep (default: zeroed, as the rebuttal's code)")
    parser.add_argument("--hand_cluster", type=int, nargs="*", default=None,
                        help="an extra feature list for the cosine maps (default for Mistral: the days cluster "
                             "plus feature 53172)")
    parser.add_argument("--save_dir", default=None,
                        help="output folder (default: <base_dir>/sae/<model>_layer<L>_<sae>/clusters/stability)")
    return parser


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "cluster"


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    model = canonical_model(args.model_name or "mistral")
    names = args.truth_names or ([{61: "Days of Week", 832: "Months"}.get(i, f"cluster {i}") for i in args.truth])
    if len(names) != len(args.truth):
        raise UserError(f"--truth_names has {len(names)} names for {len(args.truth)} --truth clusters")
    clusters_file = Path(args.clusters_file).expanduser()
    if not clusters_file.is_file():
        raise MissingArtifactError("ground-truth cluster file", clusters_file,
                                   advice="pass --clusters_file (the paper's file ships with the original repository)")
    truth_clusters = load_clusters(clusters_file)
    W, tag, source = clustering.load_decoder_source(model, args.layer, decoder_file=args.decoder_file,
                                                    sae_path=args.sae_path,
                                                    check_width=bool(args.model_name or not args.decoder_file))
    truths = {}
    for index, name in zip(args.truth, names):
        members = pick_cluster(truth_clusters, index, args.cluster_convention)
        check_members(members, W.shape[0], what=f"ground-truth cluster {index}")
        truths[name] = members
    hand = args.hand_cluster if args.hand_cluster is not None else (
        HAND_CLUSTER if model == "mistral" and W.shape[0] > max(HAND_CLUSTER) else [])
    check_members(hand, W.shape[0], what="--hand_cluster")
    cutoffs = sorted(set(args.cutoffs)) if args.cutoffs else stability.upstream_cutoffs()
    top_ks = sorted(set(args.top_k))
    save_dir = Path(args.save_dir).expanduser().resolve() if args.save_dir else \
        clusters_dir(run_dir(resolve_base_dir(args.base_dir), model, args.layer, tag)) / "stability"
    settings = {"truth": {k: v for k, v in truths.items()}, "top_ks": top_ks, "cutoffs": cutoffs,
                "diagonal": args.diagonal, "hand": hand, "decoder_sha1": hashlib.sha1(memoryview(W)).hexdigest()}

    def build(tmp: Path) -> None:
        sweep = stability.sweep_graph_clusterings(W, top_ks, cutoffs, args.diagonal, progress=True)
        result = stability.stability_grid(truths, sweep, top_ks, cutoffs)
        for name in truths:
            save_figure(stability.heatmap_figure(result, name), tmp / f"cluster_stability_{slug(name)}.png", dpi=150)
            save_figure(stability.heatmap_figure(result, name), tmp / f"cluster_stability_{slug(name)}.pdf")
        save_figure(stability.size_histogram_figure(result), tmp / "cluster_sizes.png", dpi=120)
        maps = dict(truths, **({"hand-picked": hand} if len(hand) > 1 else {}))
        save_figure(stability.cosine_heatmap_figure(W, maps), tmp / "cluster_cosines.png", dpi=150)
        save_json(tmp / "stability.json", {**result.to_json(), "truth": truths, "diagonal": args.diagonal,
                                           "decoder": source})

    run_stage(Stage("cluster stability sweep", save_dir, settings,
                    command="python sae_multid_feature_discovery/cluster_stability.py", is_dir=True), build)
    print("wrote:")
    print(f"  {save_dir}")
    return save_dir


if __name__ == "__main__":
    main()
