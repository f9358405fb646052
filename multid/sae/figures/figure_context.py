"""What an SAE figure run works on: the run folder, its decoder, the cluster file and where figures go
(`open_context` on a multid.sae.stage_configs.FigureRunConfig), and the cluster points it draws."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multid.config import ensure_writable_dir, resolve_base_dir
from multid.errors import MissingArtifactError, UserError
from multid.sae.data import run_layout
from multid.sae.analysis.cluster_points import (ClusterPoints, cluster_points_stage, file_fingerprint, find_run_dir,
                                       load_run_decoder)
from multid.sae.data.cluster_files import check_members, load_clusters, pick_cluster
from multid.sae.data.occurrence_format import generate_command
from multid.sae.stage_configs import ClusteringConfig
from multid.sae.data.tokenizers import load_tokenizer

PAPER_CLUSTER_FILES = {"gpt2": "gpt-2_layer_7_clusters_spectral_n1000.pkl",
                       "mistral": "mistral_layer_8_clusters_cutoff_0.5.pkl"}
CONVENTION_HELP = {
    "non_singleton": "index into the clusters with more than one member (the paper's Mistral figure numbering)",
    "all": "index into the full cluster list",
}


@dataclass
class RunContext:
    """What every figure run needs: the run folder, decoder, clusters and how to name things."""

    args: Any
    run: Path
    W_dec: np.ndarray
    decoder_id: str
    clusters: list[list[int]]
    clusters_file: Path
    save_dir: Path
    base_dir: Path

    def pick(self, index: int) -> list[int]:
        return pick_cluster(self.clusters, index, self.args.cluster_convention, size_limit=self.args.size_limit)

    def points(self, index: int, members: Sequence[int], k: int, command: str) -> ClusterPoints:
        check_members(members, self.W_dec.shape[0], what=f"cluster {index} of {self.clusters_file.name}")
        name = f"{self.clusters_file.stem}-{self.args.cluster_convention}-cluster{index}"
        # with --save_dir elsewhere, the reconstructions are cached there too: the run's own cache is left as it is
        folder = self.save_dir / "reconstructions" if self.args.save_dir else None
        return cluster_points_stage(self.run, name, members, self.W_dec, k=k, sample_limit=self.args.sample_limit,
                                    decoder_id=self.decoder_id, command=command, folder=folder)

    def tokenizer(self) -> Any:
        return load_tokenizer(run_layout.canonical_model(self.args.model_name), tokenizer_path=self.args.tokenizer_path,
                              base_dir=self.base_dir)


def resolve_clusters_file(args: Any, run: Path) -> Path:
    if args.clusters_file:
        path = Path(args.clusters_file).expanduser()
        if path.is_file():
            return path.resolve()
        inside = run_layout.clusters_dir(run) / path.name
        if not path.is_absolute() and inside.is_file():
            return inside
        raise MissingArtifactError("cluster file", path, clustering_command(args))
    name = PAPER_CLUSTER_FILES.get(run_layout.canonical_model(args.model_name))
    candidates = [Path.cwd() / name, run_layout.clusters_dir(run) / name] if name else []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if name is None:
        raise UserError(f"no default cluster file for model {args.model_name!r}; pass --clusters_file "
                        f"(make one with: {clustering_command(args)})")
    raise MissingArtifactError(f"cluster file {name}", " or ".join(map(str, candidates)), clustering_command(args))


def clustering_command(args: Any) -> str:
    """The clustering that makes the cluster file a figure or scan of (model, layer) reads."""
    return ClusteringConfig(model_name=args.model_name, layer=args.layer, out="<file>.json").command()


def open_context(args: Any) -> RunContext:
    """The run, decoder, cluster file and output folder a figure config names (a FigureRunConfig)."""
    base_dir = resolve_base_dir(args.base_dir)
    run = find_run_dir(base_dir, args.model_name, args.layer, args.run_dir)
    decoder_file = Path(args.decoder_file) if args.decoder_file else run_layout.decoder_path(run)
    W_dec = load_run_decoder(run, decoder_file, command=generate_command(args.model_name, args.layer))
    clusters_file = resolve_clusters_file(args, run)
    clusters = load_clusters(clusters_file, command=clustering_command(args))
    save_dir = ensure_writable_dir(Path(args.save_dir).expanduser().resolve() if args.save_dir
                                   else run_layout.sae_figs_dir(run), what="--save_dir")
    return RunContext(args, run, W_dec, file_fingerprint(decoder_file), clusters, clusters_file, save_dir, base_dir)
