"""Cluster files: read and write clusters of SAE features, pick one, and measure how parallel its decoder rows are.

A clustering (paper section 4.1) is a list of clusters, each a list of SAE feature indices. We write it as a
JSON list of lists (`write_clusters`). The paper's own files are Python pickles (docs/sae_occurrences.md):
the GPT-2 spectral file holds a dict {cluster id: members}, the Mistral graph file a list of lists; both are
read through `multid.io.load_plain_pickle`, which refuses anything but plain containers and numbers.

Indexing conventions (`pick_cluster`): the paper's Mistral figure script numbered clusters after dropping the
singletons (its "cluster 61" is the days cluster), while the GPT-2 scripts index the full list (the GPT-2 file
has no singletons, so both conventions agree there). `convention="non_singleton"` (default) or `"all"`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multid.errors import MissingArtifactError, UserError
from multid.io import load_json, load_plain_pickle, write_text_atomic
from multid.sae.stage_configs import ClusteringConfig

CONVENTIONS = ("non_singleton", "all")


def load_clusters(path: str | os.PathLike, command: str | None = None) -> list[list[int]]:
    """Read a cluster file: our JSON list of lists, or one of the paper's pickles (list, or dict ordered by key).

    Raises MissingArtifactError (naming `command`, default the clustering script) when the file is absent and
    UserError when it is not a list of lists of non-negative integers (or a pickle holds non-plain objects).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError("cluster file", path, command or ClusteringConfig(model_name="<model>", layer="<L>", out="<file>").command())
    if path.suffix.lower() == ".json":
        raw = load_json(path)
    else:
        raw = load_plain_pickle(path)
    return normalise_clusters(raw, source=str(path))


def normalise_clusters(raw: Any, source: str = "clusters") -> list[list[int]]:
    """A dict {key: members} (ordered by key) or a list of member lists -> list[list[int]], validated."""
    if isinstance(raw, dict):
        try:
            keys = sorted(raw)
        except TypeError:
            raise UserError(f"{source}: a cluster dict needs sortable keys, got {sorted(map(repr, raw))[:3]}") from None
        raw = [raw[key] for key in keys]
    if not isinstance(raw, (list, tuple)):
        raise UserError(f"{source}: expected a list of clusters (lists of feature indices), got {type(raw).__name__}")
    clusters = []
    for i, members in enumerate(raw):
        if not isinstance(members, (list, tuple)):
            raise UserError(f"{source}: cluster {i} is a {type(members).__name__}, expected a list of feature indices")
        for m in members:
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
                raise UserError(f"{source}: cluster {i} has member {m!r}; members must be non-negative integers")
        repeated = duplicate_members(members)
        if repeated:
            raise UserError(f"{source}: cluster {i} lists feature {repeated[0]} more than once; each feature may "
                            f"appear once per cluster (a repeat would count its decoder row twice)")
        clusters.append([int(m) for m in members])
    return clusters


def clusters_text(clusters: Sequence[Sequence[int]]) -> str:
    """JSON text of a clustering, one cluster per line (readable and diffable; valid JSON)."""
    lines = [json.dumps([int(m) for m in members]) for members in clusters]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def write_clusters(path: str | os.PathLike, clusters: Sequence[Sequence[int]]) -> Path:
    """Write a clustering as a JSON list of lists (atomically)."""
    return write_text_atomic(path, clusters_text(clusters))


def non_singleton(clusters: Sequence[Sequence[int]]) -> list[list[int]]:
    """The clusters with more than one member, in their original order (the paper's Mistral numbering)."""
    return [list(c) for c in clusters if len(c) > 1]


def pick_cluster(
    clusters: Sequence[Sequence[int]],
    index: int,
    convention: str = "non_singleton",
    size_limit: int | None = None,
) -> list[int]:
    """Cluster `index` of `clusters` numbered by `convention` ("non_singleton": after dropping singletons, as
    the paper's Mistral figures; "all": the full list, as the GPT-2 scripts).

    One-line UserError for an unknown convention, an index out of range (says how many clusters there are
    under that convention), an empty cluster, or a cluster larger than `size_limit` (upstream's --size_limit).
    """
    if convention not in CONVENTIONS:
        raise UserError(f"unknown cluster numbering {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    pool = non_singleton(clusters) if convention == "non_singleton" else list(clusters)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(pool):
        raise UserError(
            f"cluster index {index!r} is out of range: there are {len(pool)} clusters numbered "
            f"{convention!r} (allowed 0..{len(pool) - 1})"
        )
    members = [int(m) for m in pool[int(index)]]
    if not members:
        raise UserError(f"cluster {index} ({convention!r} numbering) is empty; pick a cluster with members")
    if size_limit is not None and len(members) > size_limit:
        raise UserError(
            f"cluster {index} has {len(members)} features, more than --size_limit {size_limit}; "
            f"raise --size_limit or pick a smaller cluster"
        )
    return members


def duplicate_members(members: Sequence[int]) -> list[int]:
    """Feature ids that appear more than once in a cluster, in first-repeat order."""
    seen: set[int] = set()
    repeated = []
    for m in members:
        if int(m) in seen and int(m) not in repeated:
            repeated.append(int(m))
        seen.add(int(m))
    return repeated


def check_members(members: Sequence[int], num_features: int, what: str = "cluster") -> None:
    """UserError when a member is not a valid feature index of a decoder with `num_features` rows, or repeats."""
    bad = [m for m in members if not 0 <= int(m) < num_features]
    if bad:
        raise UserError(
            f"{what} has feature index {bad[0]} but the decoder has {num_features} features (allowed 0..{num_features - 1})"
        )
    repeated = duplicate_members(members)
    if repeated:
        raise UserError(f"{what} lists feature {repeated[0]} more than once; give each feature once")


def cosine_matrix(W_dec: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """Gram matrix d_i . d_j of the cluster's decoder rows (float64), as stored: no renormalisation.

    The SAEs of the paper have unit-norm decoder rows, so this is the cosine similarity (section 4.1).
    """
    W = np.asarray(W_dec)
    check_members(members, W.shape[0])
    rows = W[np.asarray(members, dtype=np.int64)].astype(np.float64)
    return rows @ rows.T


def mean_pairwise_cosine(W_dec: np.ndarray, members: Sequence[int]) -> float:
    """Mean over ordered pairs i != j of d_i . d_j (the upstream README's 0.63 / 0.53 / 0.55 for the GPT-2
    layer-7 days / months / years clusters). Needs at least two members."""
    if len(members) < 2:
        raise UserError(f"mean pairwise cosine needs a cluster of at least 2 features, got {len(members)}")
    gram = cosine_matrix(W_dec, members)
    n = gram.shape[0]
    return float((gram.sum() - np.trace(gram)) / (n * (n - 1)))
