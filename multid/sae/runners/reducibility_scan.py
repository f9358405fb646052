"""The reducibility scan of a cluster file's clusters (paper section 4.2) as one stage: config, runner, result.

The script is sae_multid_feature_discovery/gpt2_compute_reducibility.py; the scan itself is
multid.sae.analysis.scan_batches.scan_clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from multid.commands import as_path
from multid.config import ensure_writable_dir, resolve_base_dir, resolve_device
from multid.errors import UserError
from multid.io import load_json
from multid.sae.data import run_layout
from multid.sae.analysis.cluster_points import (file_fingerprint, find_run_dir, load_run_decoder, occurrences_fingerprint,
                                       open_run_occurrences)
from multid.sae.data.cluster_files import check_members, load_clusters, non_singleton, pick_cluster
from multid.sae.figures.figure_context import clustering_command, resolve_clusters_file
from multid.sae.data.occurrence_format import generate_command
from multid.sae.analysis.cluster_reducibility import read_metrics
from multid.sae.stage_configs import ScanConfig
from multid.sae.analysis.scan_batches import (ScanSettings, clusters_identity, default_scan_dir, prepare_scan_dir,
                                 scan_clusters)

@dataclass(frozen=True)
class ScanResult:
    save_dir: Path
    written: list[Path]  # one metrics JSON per scanned cluster

    def metrics(self) -> dict[int, dict]:
        """cluster id -> {plane: {metric: value}} of every scanned cluster."""
        return {int(path.parent.name): read_metrics(path) for path in self.written}


def selected_clusters(config: ScanConfig, clusters: list[list[int]], num_features: int, name: str
                      ) -> tuple[dict[int, list[int]], int]:
    """(id -> members to scan, number skipped). One cluster: checked strictly; all: sizes 2..size_limit."""
    if config.clusters != "all":
        members = pick_cluster(clusters, config.cluster, config.cluster_convention, size_limit=config.size_limit)
        check_members(members, num_features, what=f"cluster {config.cluster} of {name}")
        return {config.cluster: members}, 0
    pool = non_singleton(clusters) if config.cluster_convention == "non_singleton" else clusters
    chosen = {i: list(c) for i, c in enumerate(pool) if 2 <= len(c) <= config.size_limit}
    for i, members in chosen.items():
        check_members(members, num_features, what=f"cluster {i} of {name}")
    if not chosen:
        raise UserError(f"{name} has no cluster with 2..{config.size_limit} features to scan")
    return chosen, len(pool) - len(chosen)


def check_scan_config(config: ScanConfig) -> None:
    if config.epsilon <= 0:
        raise UserError(f"--epsilon must be positive, got {config.epsilon}")
    if config.mixture not in ("both", "exact"):
        raise UserError(f"--mixture must be both or exact, got {config.mixture!r}")
    if config.radius < 0:
        raise UserError(f"--radius must be >= 0, got {config.radius}")


def run_folder(config: ScanConfig) -> Path:
    """The SAE run folder the config names (--run_dir may also name its occurrences/ folder)."""
    given = config.run_dir
    if given and Path(given).name == "occurrences":  # the dataset folder itself was given
        given = str(Path(given).parent)
    model = run_layout.canonical_model(config.model_name)
    return find_run_dir(resolve_base_dir(config.base_dir), model, config.layer, given)


def run_scan(config: ScanConfig) -> ScanResult:
    """M and S on every PCA plane of each chosen cluster's reconstructions; one stage per cluster folder."""
    check_scan_config(config)
    model = run_layout.canonical_model(config.model_name)
    run = run_folder(config)
    decoder_file = as_path(config.decoder_file) or run_layout.decoder_path(run)
    W_dec = load_run_decoder(run, decoder_file, command=generate_command(model, config.layer))
    clusters_file = resolve_clusters_file(config, run)
    clusters = load_clusters(clusters_file, command=clustering_command(config))
    chosen, skipped = selected_clusters(config, clusters, W_dec.shape[0], clusters_file.name)
    occ = open_run_occurrences(run)
    settings = ScanSettings(model=model, layer=config.layer, threshold=config.threshold, radius=config.radius,
                            epsilon=config.epsilon, sample_limit=config.sample_limit, seed=config.seed,
                            steps=config.steps, gradient=config.mixture == "both", figures=not config.no_figures, device=resolve_device(config.device),
                            decoder_id=file_fingerprint(decoder_file), occurrences_id=occurrences_fingerprint(run),
                            clusters_id=clusters_identity(clusters_file, file_fingerprint(clusters_file)),
                            null_draws=config.null_draws if config.calibrate else None)
    save_dir = ensure_writable_dir(
        as_path(config.save_dir) or default_scan_dir(run, clusters_file, config.threshold, config.radius),
        what="--save_dir")
    prepare_scan_dir(save_dir, settings.clusters_id)
    if skipped:
        print(f"skipping {skipped} clusters with fewer than 2 or more than {config.size_limit} features")
    with tqdm(total=len(chosen), desc="clusters scanned", unit="cluster", disable=len(chosen) == 1) as bar:
        written = scan_clusters(occ, W_dec, chosen, save_dir, settings, command=config.command(),
                                group_size=config.group_size, progress=bar.update, force=config.force)
    report_written(written, save_dir, single=len(chosen) == 1)
    return ScanResult(save_dir, written)


def report_written(written: list[Path], save_dir: Path, single: bool) -> None:
    empty = [path.parent.name for path in written if not load_json(path)]
    if empty:
        print(f"{len(empty)} cluster(s) fired on fewer than 2 tokens (or had no plane with spread) and have no "
              f"planes: {', '.join(empty[:20])}{' ...' if len(empty) > 20 else ''}")
    if single:
        for key, value in load_json(written[0]).items():
            gradient = f"M = {value['mixture_index']:.4f}   " if "mixture_index" in value else ""
            print(f"plane {key}: {gradient}exact M = {value['mixture_index_exact']:.4f}   "
                  f"S = {value['separability_index']:.4f} bits")
    print("wrote:")
    for path in written if len(written) <= 20 else []:
        print(f"  {path}")
    if len(written) > 20:
        print(f"  {len(written)} cluster folders under {save_dir}")
