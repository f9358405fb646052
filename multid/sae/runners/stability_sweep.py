"""Cluster stability (the paper's rebuttal) as one stage: how well graph clusterings over a sweep of (top_k,
cutoff) recover ground-truth clusters, by best Jaccard. The script is cluster_stability.py; the sweep and its
figures are multid.sae.analysis.clustering_stability's.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from multid.commands import as_path
from multid.config import print_written, resolve_base_dir
from multid.errors import MissingArtifactError, UserError
from multid.io import save_figure, save_json
from multid.sae.analysis import clustering_methods, clustering_stability
from multid.sae.data.cluster_files import check_members, load_clusters, pick_cluster
from multid.sae.data.run_layout import clusters_dir, run_dir
from multid.sae.stage_configs import StabilityConfig
from multid.stage import Stage, run_stage

HAND_CLUSTER = [398, 53172, 31484, 35234, 54166, 52464, 20629, 23936]  # Mistral days cluster + feature 53172
TRUTH_NAMES = {61: "Days of Week", 832: "Months"}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "cluster"


def truth_clusters(config: StabilityConfig, num_features: int) -> dict[str, list[int]]:
    """Name -> members of each ground-truth cluster, checked against the decoder's width."""
    names = list(config.truth_names) if config.truth_names else \
        [TRUTH_NAMES.get(i, f"cluster {i}") for i in config.truth]
    if len(names) != len(config.truth):
        raise UserError(f"--truth_names has {len(names)} names for {len(config.truth)} --truth clusters")
    clusters_file = Path(config.clusters_file).expanduser()
    if not clusters_file.is_file():
        raise MissingArtifactError("ground-truth cluster file", clusters_file,
                                   advice="pass --clusters_file (the paper's file ships with the original repository)")
    clusters = load_clusters(clusters_file)
    truths = {}
    for index, name in zip(config.truth, names):
        members = pick_cluster(clusters, index, config.cluster_convention)
        check_members(members, num_features, what=f"ground-truth cluster {index}")
        truths[name] = members
    return truths


def run_stability(config: StabilityConfig) -> Path:
    """The sweep's heat maps, size histograms, cosine maps and clustering_stability.json (a folder stage)."""
    W, tag, source = clustering_methods.load_decoder_source(config.model, config.layer, decoder_file=config.decoder_file,
                                                    sae_path=config.sae_path,
                                                    check_width=bool(config.model_name or not config.decoder_file))
    truths = truth_clusters(config, W.shape[0])
    hand = list(config.hand_cluster) if config.hand_cluster is not None else (
        HAND_CLUSTER if config.model == "mistral" and W.shape[0] > max(HAND_CLUSTER) else [])
    check_members(hand, W.shape[0], what="--hand_cluster")
    cutoffs = sorted(set(config.cutoffs)) if config.cutoffs else clustering_stability.upstream_cutoffs()
    top_ks = sorted(set(config.top_k))
    save_dir = as_path(config.save_dir) or \
        clusters_dir(run_dir(resolve_base_dir(config.base_dir), config.model, config.layer, tag)) / "stability"
    settings = {"truth": dict(truths), "top_ks": top_ks, "cutoffs": cutoffs, "diagonal": config.diagonal,
                "hand": hand, "decoder_sha1": hashlib.sha1(memoryview(W)).hexdigest()}

    def build(tmp: Path) -> None:
        sweep = clustering_stability.sweep_graph_clusterings(W, top_ks, cutoffs, config.diagonal, progress=True)
        result = clustering_stability.stability_grid(truths, sweep, top_ks, cutoffs)
        for name in truths:
            save_figure(clustering_stability.heatmap_figure(result, name), tmp / f"cluster_stability_{slug(name)}.png", dpi=150)
            save_figure(clustering_stability.heatmap_figure(result, name), tmp / f"cluster_stability_{slug(name)}.pdf")
        save_figure(clustering_stability.size_histogram_figure(result), tmp / "cluster_sizes.png", dpi=120)
        maps = dict(truths, **({"hand-picked": hand} if len(hand) > 1 else {}))
        save_figure(clustering_stability.cosine_heatmap_figure(W, maps), tmp / "cluster_cosines.png", dpi=150)
        save_json(tmp / "clustering_stability.json", {**result.to_json(), "truth": truths, "diagonal": config.diagonal,
                                           "decoder": source})

    run_stage(Stage("cluster stability sweep", save_dir, settings, command=config.command(), is_dir=True), build)
    print_written([save_dir])
    return save_dir
