"""Clustering of an SAE's decoder directions (paper section 4.1) as one stage: config, runner, result.

The script is sae_multid_feature_discovery/clustering.py; the algorithms live in multid.sae.analysis.clustering_methods.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multid.commands import as_path
from multid.config import print_written, resolve_base_dir
from multid.errors import UserError
from multid.sae.analysis import clustering_methods
from multid.sae.data.cluster_files import load_clusters, write_clusters
from multid.sae.data.run_layout import clusters_dir, run_dir
from multid.sae.stage_configs import ClusteringConfig
from multid.stage import Stage, run_stage

MODEL_CHOICES = ("gpt-2", "gpt2", "mistral", "smollm2", "tiny")


@dataclass(frozen=True)
class ClusteringResult:
    path: Path
    clusters: list[list[int]]
    method: str

    def sizes(self) -> np.ndarray:
        return np.array([len(c) for c in self.clusters], dtype=np.int64)


def checked_decoder(config: ClusteringConfig) -> tuple[np.ndarray, str, str]:
    """(decoder rows to cluster, SAE tag, description of the source), refused when they cannot be clustered."""
    W, tag, source = clustering_methods.load_decoder_source(
        config.model, config.resolved_layer, decoder_file=config.decoder_file, sae_path=config.sae_path,
        check_width=not (config.decoder_file and config.model_name is None))
    first = config.include_only_first_k_sae_features
    if first:
        if first > W.shape[0]:
            raise UserError(f"--include_only_first_k_sae_features {first} is more than the {W.shape[0]} features "
                            f"of {source}")
        W = np.ascontiguousarray(W[:first])
    if not -1.0 <= config.sim_cutoff <= 1.0:  # also catches NaN
        raise UserError(f"--sim_cutoff is a cosine and must lie in [-1, 1], got {config.sim_cutoff}")
    zero = np.flatnonzero(~np.any(W != 0, axis=1))
    if len(zero):
        raise UserError(f"{source} has {len(zero)} all-zero decoder row(s) (features {', '.join(map(str, zero[:5]))}"
                        f"{' ...' if len(zero) > 5 else ''}); their cosine with any feature is undefined: drop them "
                        f"from the decoder file before clustering")
    if config.method == "spectral" and config.n_clusters > W.shape[0]:
        raise UserError(f"--n_clusters {config.n_clusters} is more than the {W.shape[0]} features clustered")
    return W, tag, source


def run_clustering(config: ClusteringConfig) -> ClusteringResult:
    """Cluster the decoder into a JSON list of clusters (a stage: reused while decoder and settings match)."""
    W, tag, source = checked_decoder(config)
    out = as_path(config.out) or \
        clusters_dir(run_dir(resolve_base_dir(config.base_dir), config.model, config.resolved_layer, tag)) / \
        config.file_name()
    settings = {"method": config.method, **config.method_options(), "num_features": int(W.shape[0]),
                "d": int(W.shape[1]), "decoder_sha1": hashlib.sha1(memoryview(W)).hexdigest()}
    stage = Stage(f"{config.method} clusters of {source}", out, settings, command=config.command())

    def build(tmp: Path) -> None:
        clusters = clustering_methods.cluster_decoder(W, config.method, **config.method_options(),
                                              **({"progress": True} if config.method == "graph" else {}))
        write_clusters(tmp, clusters)
        sizes = np.array([len(c) for c in clusters])
        print(f"{len(clusters)} clusters, {int((sizes > 1).sum())} with more than one feature, "
              f"largest {int(sizes.max()) if len(sizes) else 0}")

    run_stage(stage, build, force=config.force)
    print_written([out])
    return ClusteringResult(out, load_clusters(out), config.method)
