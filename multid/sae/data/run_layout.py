"""Where the SAE part's artifacts live under the base dir (docs/sae_occurrences.md)."""

from __future__ import annotations

import os
from pathlib import Path

from multid.models import canonical_model


def run_dir(base_dir: str | os.PathLike, model: str, layer: int, sae_tag: str) -> Path:
    return Path(base_dir) / "sae" / f"{canonical_model(model)}_layer{layer}_{sae_tag}"


def occurrences_dir(run: Path) -> Path:
    return Path(run) / "occurrences"


def next_occurrences_dir(run: Path) -> Path:
    """Where a dataset with other settings is built while a finished one stays readable (docs/sae_occurrences.md)."""
    return Path(run) / "occurrences.next"


def shard_name(shard_index: int, num_shards: int) -> str:
    return f"shard-{shard_index:05d}-of-{num_shards:05d}"


def shard_dir(run: Path, shard_index: int, num_shards: int) -> Path:
    return occurrences_dir(run) / shard_name(shard_index, num_shards)


def decoder_path(run: Path) -> Path:
    return Path(run) / "decoder.npy"


def clusters_dir(run: Path) -> Path:
    return Path(run) / "clusters"


def reconstructions_dir(run: Path) -> Path:
    return Path(run) / "reconstructions"


def scan_dir(run: Path) -> Path:
    return Path(run) / "scan"


def sae_figs_dir(run: Path) -> Path:
    return Path(run) / "figs"
