"""Running the cluster reducibility scan over a run folder: one stage per cluster, many clusters per engine call.

`scan_clusters` reads the occurrence triples of a group of clusters in one filtered pass, builds each
cluster's reconstructions and PCA, scans all their planes in padded batches (multid.sae.analysis.cluster_reducibility.scan_many), and
writes each cluster's folder `<save_dir>/<cluster>/` (metrics JSON with the original's keys, and the figure)
as its own stage. A cluster whose stage is current is skipped, so an interrupted whole-SAE scan resumes
where it stopped; changing any setting (threshold, radius, epsilon, seed, steps, limits, decoder,
occurrences, members) rebuilds only the clusters it affects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import shutil

from multid.errors import UserError
from multid.io import save_figure, save_json
from multid.reducibility import PlaneCalibration
from multid.sae.data import run_layout
from multid.sae.analysis import cluster_reducibility
from multid.sae.analysis.reconstructions import reconstruct_from_triples, reconstruction_pca
from multid.stage import Stage, is_current, lock_for, read_record, run_stage

# 2: each cluster's record names the cluster file it was scanned from ("clusters")
# 3: the exact M beside the gradient one in every metrics JSON
VERSION = 3
# what --calibrate writes per plane (2: with S's z-score; 3: planes above 2,000 points tested on a sample of 2,000,
# at most nine null sizes)
NULL_VERSION = 3


@dataclass(frozen=True)
class ScanSettings:
    """The scan's knobs (the original script's flags) and the identities of its inputs."""

    model: str
    layer: int
    threshold: float = 0.0
    radius: float = 0.0
    epsilon: float = 0.1
    sample_limit: int | None = 20000
    seed: int = 0
    steps: int | None = None  # None = the scan's 10,000
    gradient: bool = True  # False: the exact M alone (no gradient engine, no "mixture_index")
    figures: bool = True
    device: str = "cpu"  # where the engine runs; in the settings since M may round differently elsewhere
    decoder_id: str = ""
    occurrences_id: str = ""
    clusters_id: str = ""  # "<cluster file name>#<its fingerprint>": which clustering the cluster ids refer to
    null_draws: int | None = None  # Gaussian null draws per plane (multid.reducibility.calibrate_plane); None: none

    def stem(self, cluster: int) -> str:
        """Original file stem: gpt2-layer7-cluster138-threshold0.0-radius0.0."""
        prefix = {"gpt2": "gpt2", "mistral": "mistral-7b"}.get(self.model, self.model)
        return f"{prefix}-layer{self.layer}-cluster{cluster}-threshold{float(self.threshold)}-radius{float(self.radius)}"

    def record(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold), "radius": float(self.radius), "epsilon": float(self.epsilon),
                "sample_limit": self.sample_limit, "seed": int(self.seed), "steps": self.steps,
                "figures": bool(self.figures), "device": self.device, "decoder": self.decoder_id, "occurrences": self.occurrences_id,
                "clusters": self.clusters_id, "version": VERSION,
                **({"null_draws": int(self.null_draws), "null_version": NULL_VERSION} if self.null_draws else {}),
                **({} if self.gradient else {"gradient": False})}


def default_scan_dir(run: Path, clusters_file: Path, threshold: float, radius: float) -> Path:
    """<run>/scan/<cluster file stem>/threshold<t>radius<r>: scans of two clusterings never share folders."""
    return run_layout.scan_dir(run) / Path(clusters_file).stem / f"threshold{threshold}radius{radius}"


def clusters_identity(clusters_file: Path, fingerprint: str) -> str:
    return f"{Path(clusters_file).name}#{fingerprint}"


def scanned_clusterings(save_dir: Path) -> dict[str, list[int]]:
    """Cluster-file identity -> the cluster ids scanned from it, from the records of a scan folder's clusters
    ("" for folders written before records named their cluster file)."""
    found: dict[str, list[int]] = {}
    for folder in sorted(Path(save_dir).iterdir()) if Path(save_dir).is_dir() else []:
        if folder.is_dir() and folder.name.isdigit():
            record = read_record(folder, True) or {}
            found.setdefault(str(record.get("settings", {}).get("clusters", "")), []).append(int(folder.name))
    return found


def describe_clusterings(found: dict[str, list[int]]) -> str:
    return "; ".join(f"{(key.split('#')[0] or 'unnamed (older scan)')}: {len(ids)} clusters"
                     + (f" (fingerprint {key.split('#')[1]})" if "#" in key else "") for key, ids in found.items())


def check_single_clustering(save_dir: Path) -> None:
    """Refuse a scan folder that holds clusters scanned from more than one cluster file (their ids clash)."""
    found = {key: ids for key, ids in scanned_clusterings(save_dir).items() if key}
    if len(found) > 1:
        raise UserError(f"{save_dir} holds scans of different clusterings ({describe_clusterings(found)}); "
                        f"cluster ids of two clusterings cannot be ranked together: rescan into separate folders "
                        f"(gpt2_compute_reducibility.py keys its default --save_dir by the cluster file)")


def prepare_scan_dir(save_dir: Path, clusters_id: str, log: Callable[[str], None] = print) -> None:
    """Before scanning `clusters_id` into save_dir: refuse if it holds another cluster file's scan; drop the
    folders of an older version of the same file (their ids now name other clusters)."""
    name = clusters_id.split("#")[0]
    found = scanned_clusterings(save_dir)
    others = {key: ids for key, ids in found.items() if key and key.split("#")[0] != name}
    if others:
        raise UserError(f"{save_dir} holds the scan of another clustering ({describe_clusterings(others)}); this "
                        f"scan is of {name}: pass another --save_dir, or leave it out (the default folder is "
                        f"keyed by the cluster file)")
    stale = [cid for key, ids in found.items() if key.split("#")[0] == name and key != clusters_id for cid in ids]
    for cid in stale:
        shutil.rmtree(Path(save_dir) / str(cid))
    if stale:
        log(f"removed {len(stale)} cluster folder(s) scanned from an older version of {name}")


def metrics_path(save_dir: Path, cluster: int, settings: ScanSettings) -> Path:
    return Path(save_dir) / str(cluster) / f"{settings.stem(cluster)}-metrics.json"


def cluster_stage(save_dir: Path, cluster: int, members: Sequence[int], settings: ScanSettings,
                  command: str | None) -> Stage:
    return Stage(f"reducibility scan of cluster {cluster}", Path(save_dir) / str(cluster),
                 {"cluster": int(cluster), "features": [int(m) for m in members], **settings.record()},
                 command=command, is_dir=True)


def cluster_coords(token, feature, value, members: Sequence[int], W_dec: np.ndarray, settings: ScanSettings
                   ) -> np.ndarray | None:
    """PCA coordinates [n, min(5, size)] of the cluster's first sample_limit reconstructions (None if < 2)."""
    rec = reconstruct_from_triples(token, feature, value, members, W_dec, sample_limit=settings.sample_limit,
                                   threshold=settings.threshold)
    if len(rec) < 2:
        return None
    pca = reconstruction_pca(rec.points, cluster_reducibility.num_components(len(members), len(rec)))
    return pca.coords[:, :cluster_reducibility.numerical_rank(pca.singular_values)]


def write_cluster(folder: Path, cluster: int, results: list[cluster_reducibility.PlaneResult] | None,
                  calibrations: list[PlaneCalibration] | None, settings: ScanSettings) -> None:
    """The stage's files: metrics JSON ({} when the cluster fired on fewer than 2 tokens; with the planes' nulls
    when calibrated) and the figure."""
    stem = settings.stem(cluster)
    save_json(folder / f"{stem}-metrics.json", cluster_reducibility.metrics_json(results or [], calibrations))
    if settings.figures and results:
        fig = cluster_reducibility.scan_figure(results, settings.epsilon, title=f"cluster {cluster}")
        save_figure(fig, folder / f"{stem}.png", dpi=80)


def scan_clusters(occ: Any, W_dec: np.ndarray, clusters: dict[int, list[int]], save_dir: Path,
                  settings: ScanSettings, *, command: str | None = None, group_size: int = 64,
                  progress: Callable[[int], None] | None = None, force: bool = False) -> list[Path]:
    """Scan `clusters` (id -> members), `group_size` clusters per occurrence read and engine batch.

    Returns the metrics JSON paths of every requested cluster (reused or rebuilt)."""
    with lock_for(Path(save_dir)):  # a second identical scan waits, then finds every cluster current
        return _scan_clusters_locked(occ, W_dec, clusters, save_dir, settings, command=command, group_size=group_size,
                                     progress=progress, force=force)


def _scan_clusters_locked(occ: Any, W_dec: np.ndarray, clusters: dict[int, list[int]], save_dir: Path,
                          settings: ScanSettings, *, command: str | None, group_size: int,
                          progress: Callable[[int], None] | None, force: bool) -> list[Path]:
    ids = list(clusters)
    pending = [c for c in ids if force or not is_current(cluster_stage(save_dir, c, clusters[c], settings, command))]
    if progress is not None and len(ids) > len(pending):
        progress(len(ids) - len(pending))
    for start in range(0, len(pending), group_size):
        group = pending[start:start + group_size]
        wanted = np.unique(np.concatenate([np.asarray(clusters[c], dtype=np.int64) for c in group]))
        token, feature, value = occ.triples(features=wanted)
        coords = {c: cluster_coords(token, feature, value, clusters[c], W_dec, settings) for c in group}
        results = cluster_reducibility.scan_many({c: x for c, x in coords.items() if x is not None}, radius=settings.radius,
                                 eps=settings.epsilon, seed=settings.seed, steps=settings.steps,
                                 device=settings.device, gradient=settings.gradient)
        calibrations = {c: cluster_reducibility.calibrate_results(planes, settings.null_draws, settings.epsilon,
                                                                  settings.seed)
                        for c, planes in results.items()} if settings.null_draws else {}
        for c in group:
            run_stage(cluster_stage(save_dir, c, clusters[c], settings, command),
                      lambda tmp, c=c: write_cluster(tmp, c, results.get(c), calibrations.get(c), settings), force=True)
            if progress is not None:
                progress(1)
    return [metrics_path(save_dir, c, settings) for c in ids]
