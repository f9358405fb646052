"""The summary and ranking of a reducibility scan (paper section 4.2) as one stage: config, runner, result.

The script is sae_multid_feature_discovery/analyze_reducibilities.py; the summaries and the figure are
multid.sae.analysis.cluster_reducibility's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from multid.commands import as_path
from multid.config import print_written, resolve_base_dir
from multid.errors import MissingArtifactError, UserError
from multid.io import save_csv, save_figure, save_json
from multid.paper import sae_model_title
from multid.sae.analysis import cluster_reducibility
from multid.sae.analysis.cluster_points import find_run_dir
from multid.sae.analysis.scan_batches import check_single_clustering, default_scan_dir
from multid.sae.figures.figure_context import resolve_clusters_file
from multid.sae.stage_configs import RankingConfig
from multid.stage import RECORD_NAME, Stage, damage, run_stage

RANKING_COLUMNS = ["rank", "cluster", "score", "mean_mixture_index", "mean_separability_index", "kept_planes"]
CALIBRATED_COLUMNS = ["best_q", "significant_planes", "s_z", "m_z"]
ALPHA = 0.05  # the false discovery rate of the calibrated ranking


@dataclass(frozen=True)
class RankingResult:
    out_dir: Path
    ranking: list[cluster_reducibility.ClusterSummary]


def metric_files(scan_dir: Path, remake: str) -> dict[int, Path]:
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
                                    f"scan wrote ({problem}); rerun the scan ({remake}) to rebuild it")
                found[int(folder.name)] = files[0]
    return found


def scan_folder(config: RankingConfig) -> Path:
    if config.scan_dir:
        return as_path(config.scan_dir)
    run = find_run_dir(resolve_base_dir(config.base_dir), config.model, config.layer, config.run_dir)
    return default_scan_dir(run, resolve_clusters_file(config, run), config.threshold, config.radius)


def run_ranking(config: RankingConfig) -> RankingResult:
    """Per-cluster mean M and mean S, the ranking and its figure (a stage: <scan_dir>/analysis by default)."""
    scan_dir = scan_folder(config)
    check_single_clustering(scan_dir)
    files = metric_files(scan_dir, config.scan_command())
    if not files:
        raise MissingArtifactError("cluster reducibility metrics", scan_dir, config.scan_command())
    named = config.named_clusters()
    out = as_path(config.out_dir) or scan_dir / "analysis"
    digest = hashlib.sha1()
    for cid, path in files.items():
        digest.update(f"{cid}:{path.name}:".encode() + path.read_bytes())
    leading_zero = not config.plain_mean
    settings = {"metrics": digest.hexdigest(), "min_mixture": config.min_mixture, "leading_zero": leading_zero,
                "mixture": config.mixture, "named": {str(k): v for k, v in sorted(named.items())},
                "model": config.model, "threshold": config.threshold, "radius": config.radius}
    metrics = {cid: cluster_reducibility.read_metrics(path) for cid, path in files.items()}
    summaries = cluster_reducibility.summarise(metrics, config.min_mixture, leading_zero=leading_zero, mixture=config.mixture)
    calibrated = None
    if config.score == "calibrated":
        calibrated = cluster_reducibility.calibrated_summaries(metrics, config.min_mixture, config.mixture, ALPHA)
        settings["score"] = "calibrated"
        ranked = cluster_reducibility.calibrated_ranking(summaries, calibrated)
    else:
        ranked = cluster_reducibility.ranking(summaries)
    by_id = {c.cluster: c for c in calibrated or []}
    stem = f"reducibility_metrics_threshold{config.threshold:g}_radius{config.radius:g}"
    label = sae_model_title(config.model)

    def build(tmp: Path) -> None:
        fig = cluster_reducibility.summary_figure(summaries, named, title=f"{label} Mixture Index vs Separability Index")
        for fmt in ("pdf", "png"):
            save_figure(fig, tmp / f"{stem}.{fmt}", dpi=150)
        rows = [{"rank": i + 1, "cluster": s.cluster, "score": s.score, "mean_mixture_index": s.mean_m,
                 "mean_separability_index": s.mean_s, "kept_planes": s.kept,
                 **({"best_q": by_id[s.cluster].best_q, "significant_planes": by_id[s.cluster].significant,
                     "s_z": by_id[s.cluster].s_z, "m_z": by_id[s.cluster].m_z} if calibrated else {})}
                for i, s in enumerate(ranked)]
        columns = RANKING_COLUMNS + (CALIBRATED_COLUMNS if calibrated else [])
        save_csv(tmp / "ranking.csv", columns, [[r[c] for c in columns] for r in rows])
        save_json(tmp / "summary.json", {"settings": settings, "ranking": rows})

    run_stage(Stage("reducibility scan summary", out, settings, command=config.command(), is_dir=True), build)
    print_ranking(config, files, scan_dir, named, metrics, summaries, ranked)
    if calibrated is not None:
        print_calibrated(calibrated, ranked[:config.top])
    print_written([out])
    return RankingResult(out, ranked)


def print_calibrated(calibrated: list[cluster_reducibility.CalibratedSummary],
                     top: list[cluster_reducibility.ClusterSummary]) -> None:
    by_id = {c.cluster: c for c in calibrated}
    flagged = [c for c in calibrated if c.best_q <= ALPHA]
    print(f"calibrated: {sum(c.significant for c in calibrated)} planes of {len(flagged)} of {len(calibrated)} "
          f"clusters have S above their Gaussian null at {ALPHA:.0%} false discovery rate (Benjamini-Hochberg "
          f"over every kept plane)")
    print("  " + ", ".join(f"{s.cluster} (q {by_id[s.cluster].best_q:.3g}, S z {by_id[s.cluster].s_z:+.0f}, "
                           f"M z {by_id[s.cluster].m_z:+.0f})"
                           for s in top))


def print_ranking(config: RankingConfig, files: dict[int, Path], scan_dir: Path, named: dict[int, str],
                  metrics: dict[int, dict], summaries: list[cluster_reducibility.ClusterSummary],
                  ranked: list[cluster_reducibility.ClusterSummary]) -> None:
    rank_of = {s.cluster: i + 1 for i, s in enumerate(ranked)}
    print(f"{len(files)} clusters read from {scan_dir}")
    for cid, name in sorted(named.items()):
        print(f"{name} (cluster {cid}): rank {rank_of[cid]}" if cid in rank_of else f"{name} (cluster {cid}): not scanned")
    print(f"top {min(config.top, len(ranked))} ({config.mixture} M{', calibrated' if config.score == 'calibrated' else ''}): "
          + " ".join(str(s.cluster) for s in ranked[:config.top]))
    other = "gradient" if config.mixture == "exact" else "exact"
    has_both = all(cluster_reducibility.MIXTURE_KEYS[other] in plane for planes in metrics.values() for plane in planes.values())
    if has_both and len(summaries) > 1:
        rho, moves = cluster_reducibility.rank_comparison(
            summaries, cluster_reducibility.summarise(metrics, config.min_mixture, leading_zero=not config.plain_mean, mixture=other))
        print(f"against the ranking by the {other} M: Spearman {rho:.3f}; largest moves (cluster: rank "
              f"{config.mixture} -> {other}): " + ", ".join(f"{c}: {a} -> {b}" for c, a, b in moves))
