"""Mixture index M and separability index S on the PCA planes of a cluster's reconstructions (paper section 4.2).

    cd sae_multid_feature_discovery && python3 gpt2_compute_reducibility.py --cluster 138
    python3 gpt2_compute_reducibility.py --clusters all --save_dir metrics     # every cluster, one batched run

Per cluster: the first --sample_limit reconstructions, PCA(min(5, size)), and for each consecutive pair of
components M (eps = --epsilon; T = 1, hard fraction; start direction seeded: plane p uses seed + p) and S
(bits). Points with plane norm <= --radius are dropped per plane; only activations > --threshold count.
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

from multid.config import add_device_arg, ensure_writable_dir, positive_int, resolve_base_dir, \
    resolve_device
from multid.errors import UserError, cli_entry
from multid.sae import paths
from multid.sae.cluster_points import (file_fingerprint, find_run_dir, generate_command, load_run_decoder,
                                       occurrences_fingerprint, open_run_occurrences)
from multid.sae.clusters import CONVENTIONS, check_members, load_clusters, non_singleton, pick_cluster
from multid.sae.figure_cli import add_model_layer_args, clustering_command, resolve_clusters_file
from multid.sae.scan_run import (ScanSettings, clusters_identity, default_scan_dir, prepare_scan_dir,
                                  scan_clusters)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_layer_args(parser)
    parser.add_argument("--clusters_file", default=None,
                        help="cluster file, our JSON or the paper's pickle (default: the paper's GPT-2 file, in the "
                             "current folder or <run_dir>/clusters/)")
    parser.add_argument("--cluster", type=int, default=138, help="cluster index (default: %(default)s, days)")
    parser.add_argument("--clusters", default=None, choices=["all"],
                        help="all: scan every cluster with 2..--size_limit features in one batched run")
    parser.add_argument("--cluster_convention", choices=CONVENTIONS, default="all",
                        help="how --cluster numbers clusters: all = the full list (the original GPT-2 scripts; "
                             "default), non_singleton = after dropping one-feature clusters (the Mistral figures)")
    parser.add_argument("--activations_file", "--run_dir", dest="run_dir", default=None,
                        help="run folder holding the occurrence dataset (default: the one "
                             "<base_dir>/sae/<model>_layer<L>_* folder)")
    parser.add_argument("--decoder_file", default=None,
                        help="decoder .npy, or .npz with key W_dec (default: <run_dir>/decoder.npy)")
    parser.add_argument("--size_limit", type=positive_int, default=1000,
                        help="refuse (or, with --clusters all, skip) clusters with more features (default: 1000)")
    parser.add_argument("--sample_limit", type=positive_int, default=20000,
                        help="first N reconstructions in corpus order (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.0, help="activation threshold (default: 0.0)")
    parser.add_argument("--radius", type=float, default=0.0,
                        help="drop points with norm <= radius in each plane (default: 0.0)")
    parser.add_argument("--epsilon", type=float, default=0.1, help="slab half-width of M (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of M's start directions (default: 0)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="gradient-ascent steps of M (default: 10000, as the original)")
    add_device_arg(parser, default="cpu")
    parser.add_argument("--no_figures", action="store_true", help="write only the metrics JSON")
    parser.add_argument("--group_size", type=positive_int, default=64,
                        help="clusters per occurrence read and engine batch (default: %(default)s)")
    parser.add_argument("--save_dir", default=None,
                        help="output folder (default: <run_dir>/scan/<cluster file stem>/threshold<t>radius<r>)")
    parser.add_argument("--force", action="store_true", help="recompute clusters even if current")
    return parser


def selected_clusters(args: argparse.Namespace, clusters: list[list[int]], num_features: int, name: str
                      ) -> tuple[dict[int, list[int]], int]:
    """(id -> members to scan, number skipped). One cluster: checked strictly; all: sizes 2..size_limit."""
    if args.clusters != "all":
        members = pick_cluster(clusters, args.cluster, args.cluster_convention, size_limit=args.size_limit)
        check_members(members, num_features, what=f"cluster {args.cluster} of {name}")
        return {args.cluster: members}, 0
    pool = non_singleton(clusters) if args.cluster_convention == "non_singleton" else clusters
    chosen = {i: list(c) for i, c in enumerate(pool) if 2 <= len(c) <= args.size_limit}
    for i, members in chosen.items():
        check_members(members, num_features, what=f"cluster {i} of {name}")
    if not chosen:
        raise UserError(f"{name} has no cluster with 2..{args.size_limit} features to scan")
    return chosen, len(pool) - len(chosen)


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    if args.epsilon <= 0:
        raise UserError(f"--epsilon must be positive, got {args.epsilon}")
    if args.radius < 0:
        raise UserError(f"--radius must be >= 0, got {args.radius}")
    model = paths.canonical_model(args.model_name)
    base_dir = resolve_base_dir(args.base_dir)
    if args.run_dir and Path(args.run_dir).name == "occurrences":  # the dataset folder itself was given
        args.run_dir = str(Path(args.run_dir).parent)
    run = find_run_dir(base_dir, model, args.layer, args.run_dir)
    decoder_file = Path(args.decoder_file).expanduser() if args.decoder_file else paths.decoder_path(run)
    W_dec = load_run_decoder(run, decoder_file, command=generate_command(model, args.layer))
    clusters_file = resolve_clusters_file(args, run)
    clusters = load_clusters(clusters_file, command=clustering_command(args))
    chosen, skipped = selected_clusters(args, clusters, W_dec.shape[0], clusters_file.name)
    occ = open_run_occurrences(run)
    settings = ScanSettings(model=model, layer=args.layer, threshold=args.threshold, radius=args.radius,
                            epsilon=args.epsilon, sample_limit=args.sample_limit, seed=args.seed, steps=args.steps,
                            figures=not args.no_figures, device=resolve_device(args.device),
                            decoder_id=file_fingerprint(decoder_file),
                            occurrences_id=occurrences_fingerprint(run),
                            clusters_id=clusters_identity(clusters_file, file_fingerprint(clusters_file)))
    save_dir = ensure_writable_dir(
        Path(args.save_dir).expanduser().resolve() if args.save_dir
        else default_scan_dir(run, clusters_file, args.threshold, args.radius), what="--save_dir")
    prepare_scan_dir(save_dir, settings.clusters_id)
    command = "python sae_multid_feature_discovery/gpt2_compute_reducibility.py " + \
        " ".join(sys.argv[1:] if argv is None else argv)
    if skipped:
        print(f"skipping {skipped} clusters with fewer than 2 or more than {args.size_limit} features")
    from tqdm import tqdm

    with tqdm(total=len(chosen), desc="clusters scanned", unit="cluster", disable=len(chosen) == 1) as bar:
        written = scan_clusters(occ, W_dec, chosen, save_dir, settings, command=command, group_size=args.group_size,
                                progress=bar.update, force=args.force)
    from multid.io import load_json

    empty = [path.parent.name for path in written if not load_json(path)]
    if empty:
        print(f"{len(empty)} cluster(s) fired on fewer than 2 tokens (or had no plane with spread) and have no "
              f"planes: {', '.join(empty[:20])}{' ...' if len(empty) > 20 else ''}")
    if len(chosen) == 1:
        for key, value in load_json(written[0]).items():
            print(f"plane {key}: M = {value['mixture_index']:.4f}   S = {value['separability_index']:.4f} bits")
    print("wrote:")
    for path in written if len(written) <= 20 else []:
        print(f"  {path}")
    if len(written) > 20:
        print(f"  {len(written)} cluster folders under {save_dir}")
    return written


if __name__ == "__main__":
    main()
