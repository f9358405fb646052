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
import hashlib
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import positive_int, resolve_base_dir
from multid.sae.figure_cli import add_model_layer_args, resolve_clusters_file
from multid.errors import MissingArtifactError, UserError, cli_entry
from multid.io import save_csv, save_figure, save_json
from multid.sae import paths, scan
from multid.sae.cluster_points import find_run_dir
from multid.sae.scan_run import check_single_clustering, default_scan_dir
from multid.stage import RECORD_NAME, Stage, damage, run_stage

GPT2_NAMED = {138: "Weekdays cluster", 251: "Months cluster", 212: "Years cluster"}
SCAN_SCRIPT = "python sae_multid_feature_discovery/gpt2_compute_reducibility.py --clusters all"


def named_cluster(text: str) -> tuple[int, str]:
    cluster, sep, label = text.partition(":")
    try:
        return int(cluster), (label if sep else f"cluster {cluster}")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CLUSTER:LABEL (e.g. 138:Weekdays), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_layer_args(parser)
    parser.add_argument("--run_dir", default=None, help="SAE run folder (default: the one for model and layer)")
    parser.add_argument("--threshold", type=float, default=0.0, help="the scan's --threshold (default: 0.0)")
    parser.add_argument("--radius", type=float, default=0.0, help="the scan's --radius (default: 0.0)")
    parser.add_argument("--clusters_file", default=None,
                        help="the cluster file that was scanned (default: the model's, as the scan script); "
                             "picks the default --scan_dir")
    parser.add_argument("--scan_dir", default=None,
                        help="folder of per-cluster results (default: <run_dir>/scan/<cluster file stem>/"
                             "threshold<t>radius<r>)")
    parser.add_argument("--min_mixture", type=float, default=scan.MIN_MIXTURE,
                        help="drop planes with M below this (default: %(default)s)")
    parser.add_argument("--mixture", choices=sorted(scan.MIXTURE_KEYS), default="gradient",
                        help="which M ranks the clusters: gradient = the original optimiser's value (the published "
                             "ranking; default) or exact = the maximum over every slab (docs/reducibility.md)")
    parser.add_argument("--plain_mean", action="store_true",
                        help="ranking score = plain mean of (1 - M) * S over kept planes (default: the original's "
                             "mean with a leading 0)")
    parser.add_argument("--named", type=named_cluster, nargs="*", default=None,
                        help="clusters to highlight, CLUSTER:LABEL (default for GPT-2: 138 weekdays, 251 months, "
                             "212 years)")
    parser.add_argument("--top", type=positive_int, default=20, help="print the top N clusters (default: 20)")
    parser.add_argument("--out_dir", default=None, help="output folder (default: <scan_dir>/analysis)")
    return parser


def metric_files(scan_dir: Path) -> dict[int, Path]:
    """cluster id -> its metrics JSON (folders named by an integer, one *-metrics.json inside).

    A cluster folder whose files no longer match its stage record (edited, truncated) is an error."""
    found = {}
    for folder in sorted(scan_dir.iterdir()) if scan_dir.is_dir() else []:
        if folder.is_dir() and folder.name.isdigit():
            files = sorted(folder.glob("*-metrics.json"))
            if files:
                problem = damage(folder, True) if (folder / RECORD_NAME).is_file() else None
                if problem is not None:
                    raise UserError(f"the scan result of cluster {folder.name} ({folder}) does not match what the "
                                    f"scan wrote ({problem}); rerun the scan ({SCAN_SCRIPT}) to rebuild it")
                found[int(folder.name)] = files[0]
    return found


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    model = paths.canonical_model(args.model_name)
    if args.scan_dir:
        scan_dir = Path(args.scan_dir).expanduser().resolve()
    else:
        run = find_run_dir(resolve_base_dir(args.base_dir), model, args.layer, args.run_dir)
        scan_dir = default_scan_dir(run, resolve_clusters_file(args, run), args.threshold, args.radius)
    check_single_clustering(scan_dir)
    files = metric_files(scan_dir)
    if not files:
        raise MissingArtifactError("cluster reducibility metrics", scan_dir,
                                   f"{SCAN_SCRIPT} --model_name {args.model_name} --layer {args.layer} "
                                   f"--threshold {args.threshold} --radius {args.radius}")
    named = dict(args.named) if args.named is not None else (GPT2_NAMED if model == "gpt2" else {})
    out = Path(args.out_dir).expanduser().resolve() if args.out_dir else scan_dir / "analysis"
    digest = hashlib.sha1()
    for cid, path in files.items():
        digest.update(f"{cid}:{path.name}:".encode() + path.read_bytes())
    settings = {"metrics": digest.hexdigest(), "min_mixture": args.min_mixture, "leading_zero": not args.plain_mean,
                "mixture": args.mixture,
                "named": {str(k): v for k, v in sorted(named.items())}, "model": model,
                "threshold": args.threshold, "radius": args.radius}
    metrics = {cid: scan.read_metrics(path) for cid, path in files.items()}
    summaries = scan.summarise(metrics, args.min_mixture, leading_zero=not args.plain_mean, mixture=args.mixture)
    ranked = scan.ranking(summaries)
    other = "gradient" if args.mixture == "exact" else "exact"
    has_both = all(scan.MIXTURE_KEYS[other] in plane for planes in metrics.values() for plane in planes.values())
    stem = f"reducibility_metrics_threshold{args.threshold:g}_radius{args.radius:g}"
    label = {"gpt2": "GPT-2", "mistral": "Mistral-7B"}.get(model, model)

    def build(tmp: Path) -> None:
        fig = scan.summary_figure(summaries, named, title=f"{label} Mixture Index vs Separability Index")
        for fmt in ("pdf", "png"):
            save_figure(fig, tmp / f"{stem}.{fmt}", dpi=150)
        save_csv(tmp / "ranking.csv", ["rank", "cluster", "score", "mean_mixture_index", "mean_separability_index",
                                       "kept_planes"],
                 [[i + 1, s.cluster, s.score, s.mean_m, s.mean_s, s.kept] for i, s in enumerate(ranked)])
        save_json(tmp / "summary.json", {"settings": settings, "ranking": [
            {"rank": i + 1, "cluster": s.cluster, "score": s.score, "mean_mixture_index": s.mean_m,
             "mean_separability_index": s.mean_s, "kept_planes": s.kept} for i, s in enumerate(ranked)]})

    run_stage(Stage("reducibility scan summary", out, settings,
                    command="python sae_multid_feature_discovery/analyze_reducibilities.py", is_dir=True), build)
    rank_of = {s.cluster: i + 1 for i, s in enumerate(ranked)}
    print(f"{len(files)} clusters read from {scan_dir}")
    for cid, name in sorted(named.items()):
        print(f"{name} (cluster {cid}): rank {rank_of[cid]}" if cid in rank_of else f"{name} (cluster {cid}): not scanned")
    print(f"top {min(args.top, len(ranked))} ({args.mixture} M): " + " ".join(str(s.cluster) for s in ranked[:args.top]))
    if has_both and len(summaries) > 1:
        rho, moves = scan.rank_comparison(
            summaries, scan.summarise(metrics, args.min_mixture, leading_zero=not args.plain_mean, mixture=other))
        print(f"against the ranking by the {other} M: Spearman {rho:.3f}; largest moves (cluster: rank {args.mixture} "
              f"-> {other}): " + ", ".join(f"{c}: {a} -> {b}" for c, a, b in moves))
    print("wrote:")
    print(f"  {out}")
    return out


if __name__ == "__main__":
    main()
