"""From a run folder to a cluster's PCA'd reconstructions with their contexts: the shared first step of every
SAE figure script (interactive figures, Figures 1 / 12 / 13, the rebuttal grid).

The result is one stage artifact (`multid.stage`), `<run>/reconstructions/<name>-pca.npz`, written by
`save_sae_pca` (so `compare_circle_intervention_types.py --sae_pca` reads it) with, besides the PCA arrays,
`features` (the cluster), `tokens` (global token index of each point), and `contexts` [n, before + 1]
(token ids of the 10 tokens before and the firing token, -1 where the context starts later). It is rebuilt
when the cluster, the limits, the decoder or the occurrence dataset change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multid.errors import MissingArtifactError, UserError
from multid.io import load_npz
from multid.sae.data import run_layout
from multid.sae.data.occurrence_format import generate_command
from multid.sae.analysis.reconstructions import (Pca, check_sample_limit, cluster_feature_ids, cluster_reconstructions,
                                    reconstruction_pca, save_sae_pca)
from multid.stage import RECORD_NAME, Stage, damage, record_path, run_stage, settings_id

CONTEXT_BEFORE = 10
# ----------------------------------------------------------------------------------------- run folder


def find_run_dir(base_dir: Path, model: str, layer: int, run_dir: str | os.PathLike | None = None) -> Path:
    """`run_dir` if given, else the one run folder `<base_dir>/sae/<model>_layer<L>_*` (error if none or several)."""
    if run_dir is not None:
        path = Path(run_dir).expanduser().resolve()
        if not run_layout.occurrences_dir(path).exists():
            raise MissingArtifactError(f"occurrence dataset of --run_dir {path}", run_layout.occurrences_dir(path),
                                       generate_command(model, layer))
        return path
    root = Path(base_dir) / "sae"
    prefix = f"{run_layout.canonical_model(model)}_layer{layer}_"
    found = sorted(p for p in root.glob(prefix + "*") if p.is_dir()) if root.exists() else []
    if not found:
        raise MissingArtifactError(f"SAE run folder for {model} layer {layer}", root / (prefix + "<sae>"),
                                   generate_command(model, layer))
    if len(found) > 1:
        raise UserError(f"several SAE runs for {model} layer {layer} under {root}: "
                        f"{', '.join(p.name for p in found)}; pick one with --run_dir")
    return found[0]


def load_run_decoder(run: Path, decoder_file: str | os.PathLike | None = None, command: str | None = None) -> np.ndarray:
    """W_dec [F, d] float32 of a run (its decoder.npy), or `decoder_file` (.npy, or .npz with key W_dec)."""
    path = Path(decoder_file).expanduser() if decoder_file else run_layout.decoder_path(run)
    command = command or generate_command("<model>", "<L>")
    if not path.is_file():
        raise MissingArtifactError("SAE decoder", path, command)
    if record_path(path, False).is_file():
        problem = damage(path, False)
        if problem is not None:
            raise UserError(f"the decoder {path} does not match what was written ({problem}); rerun "
                            f"{command} to rewrite it")
    try:
        if path.suffix == ".npz":
            data = load_npz(path)
            if "W_dec" not in data:
                raise UserError(f"{path} has no 'W_dec' array (keys: {', '.join(sorted(data))})")
            W = data["W_dec"]
        else:
            W = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read the decoder {path} ({err}); expected a .npy [F, d] or .npz with W_dec") from None
    if W.ndim != 2:
        raise UserError(f"decoder {path} has shape {W.shape}; expected [num_features, d_model]")
    own = run_layout.decoder_path(run)
    if decoder_file and own.is_file() and own.resolve() != path.resolve():
        expected = np.load(own, mmap_mode="r", allow_pickle=False).shape
        if tuple(W.shape) != tuple(expected):
            raise UserError(f"--decoder_file {path} is [{W.shape[0]}, {W.shape[1]}] but the run's SAE decoder "
                            f"({own}) is [{expected[0]}, {expected[1]}]: the occurrences were written with that SAE; "
                            f"give its decoder (or leave --decoder_file out)")
    bad_rows = np.flatnonzero(~np.isfinite(W).all(axis=1))
    if len(bad_rows):
        raise UserError(f"the decoder {path} has NaN or infinite values in {len(bad_rows)} row(s) (features "
                        f"{', '.join(map(str, bad_rows[:5]))}{' ...' if len(bad_rows) > 5 else ''}); "
                        f"reconstructions and their PCA would be undefined: fix or regenerate the decoder")
    return np.asarray(W, dtype=np.float32)


def file_fingerprint(path: Path) -> str:
    """Identity of an input file for stage settings: its stage record if it has one, else name/size/mtime."""
    path = Path(path)
    record = path.with_name(path.name + ".stage.json")
    if record.exists():
        return hashlib.sha1(record.read_bytes()).hexdigest()[:16]
    stat = path.stat()
    return settings_id({"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})


def occurrences_fingerprint(run: Path) -> str:
    """Identity of a run's occurrence dataset: the stage records of its shards (else its files' sizes)."""
    occ_dir = run_layout.occurrences_dir(run)
    parts = []
    run_meta = Path(run) / "run.json"
    if run_meta.is_file():
        parts.append(["run.json", run_meta.stat().st_size, hashlib.sha1(run_meta.read_bytes()).hexdigest()])
    for item in sorted(occ_dir.rglob("*")) if occ_dir.exists() else []:
        if item.name == RECORD_NAME or item.suffix == ".parquet":
            parts.append([item.relative_to(occ_dir).as_posix(), item.stat().st_size,
                          hashlib.sha1(item.read_bytes()).hexdigest() if item.name == RECORD_NAME else None])
    return settings_id({"files": parts})


def open_run_occurrences(run: Path) -> Any:
    """The occurrence reader of a run (multid.sae.data.occurrence_store; raises MissingArtifactError naming the command)."""
    from multid.sae.data.occurrence_store import open_occurrences

    return open_occurrences(run)


# ----------------------------------------------------------------------------------------- points


@dataclass(frozen=True)
class ClusterPoints:
    """A cluster's PCA'd reconstructions: features, pca, tokens [n], contexts [n, before+1] (-1 padded),
    next_ids [n] (id of the token after the firing one in the same context, -1 at a context end), path."""

    features: np.ndarray
    pca: Pca
    tokens: np.ndarray
    contexts: np.ndarray
    next_ids: np.ndarray
    path: Path | None = None

    def context_lists(self) -> list[list[int]]:
        return [[int(t) for t in row if t >= 0] for row in self.contexts]

    def firing_token_ids(self) -> np.ndarray:
        return self.contexts[:, -1]


def contexts_array(occ: Any, tokens: np.ndarray, before: int = CONTEXT_BEFORE) -> np.ndarray:
    """[n, before + 1] int64 token ids ending at each token (left-padded with -1 at a context start)."""
    out = np.full((len(tokens), before + 1), -1, dtype=np.int64)
    if len(tokens):
        for i, ctx in enumerate(occ.contexts(np.asarray(tokens, np.int64), before=before)):
            ctx = list(ctx)[-(before + 1):]
            if ctx:
                out[i, before + 1 - len(ctx):] = ctx
    return out


def next_token_ids(occ: Any, tokens: np.ndarray) -> np.ndarray:
    """Token id at t + 1 for every token t whose context goes on (-1 where t is a context's last position)."""
    tokens = np.asarray(tokens, np.int64)
    out = np.full(tokens.shape, -1, dtype=np.int64)
    ctx_len = int(occ.meta["ctx_len"])
    inside = (tokens + 1) % ctx_len != 0
    if inside.any():
        out[inside] = occ.token_ids(tokens[inside] + 1)
    return out


def compute_cluster_points(occ: Any, features: Sequence[int], W_dec: np.ndarray, *, k: int,
                           sample_limit: int | None = None, threshold: float = 0.0) -> ClusterPoints:
    """Reconstructions of the cluster (first `sample_limit` in corpus order), their PCA(k) and contexts."""
    ids = cluster_feature_ids(features, W_dec.shape[0])
    rec = cluster_reconstructions(occ, ids, W_dec, sample_limit=sample_limit, threshold=threshold)
    if len(rec) < 2:
        raise UserError(f"the cluster {ids.tolist()[:10]}{'...' if ids.size > 10 else ''} fired on {len(rec)} "
                        f"token(s) in the occurrence dataset; a PCA needs at least 2 (use more data or another cluster)")
    pca = reconstruction_pca(rec.points, k)
    return ClusterPoints(ids, pca, rec.tokens, contexts_array(occ, rec.tokens), next_token_ids(occ, rec.tokens))


def cluster_points_stage(run: Path, name: str, features: Sequence[int], W_dec: np.ndarray, *, k: int,
                         sample_limit: int | None, threshold: float = 0.0, decoder_id: str,
                         command: str | None = None, occ: Any = None, folder: Path | None = None) -> ClusterPoints:
    """compute_cluster_points as a stage: `<folder>/<name>-pca.npz` (default folder `<run>/reconstructions`),
    reused when nothing changed."""
    ids = cluster_feature_ids(features, W_dec.shape[0])
    check_sample_limit(sample_limit)
    path = Path(folder or run_layout.reconstructions_dir(run)) / f"{name}-pca.npz"
    settings = {"features": ids.tolist(), "k": int(k), "sample_limit": sample_limit, "threshold": float(threshold),
                "decoder": decoder_id, "occurrences": occurrences_fingerprint(run), "context_before": CONTEXT_BEFORE,
                "version": 1}

    def build(tmp: Path) -> None:
        reader = occ if occ is not None else open_run_occurrences(run)
        points = compute_cluster_points(reader, ids, W_dec, k=k, sample_limit=sample_limit, threshold=threshold)
        save_sae_pca(tmp, points.pca, features=points.features, tokens=points.tokens, contexts=points.contexts,
                     next_ids=points.next_ids)

    stage = Stage(f"PCA of cluster reconstructions {name}", path, settings, command)
    run_stage(stage, build)
    return read_cluster_points(path)


def read_cluster_points(path: str | os.PathLike) -> ClusterPoints:
    """Load a file written by cluster_points_stage."""
    data = load_npz(path)
    missing = [key for key in ("components", "coords", "tokens", "contexts", "next_ids", "features") if key not in data]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it is not a cluster-points file (rebuild it)")
    pca = Pca(coords=data["coords"], components=data["components"], mean=data["mean"],
              explained_variance_ratio=data["explained_variance_ratio"], singular_values=data["singular_values"])
    return ClusterPoints(data["features"], pca, data["tokens"], data["contexts"], data["next_ids"], Path(path))
