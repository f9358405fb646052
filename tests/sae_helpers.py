"""Small shared builders for the SAE tests (import from here; the names below are kept stable).

- `TINY_HOOK`, `TINY_D_MODEL`: the hook and width of the random `tiny` registered model the SAEs attach to.
- `make_tiny_sae(folder, d_sae=96, hook=TINY_HOOK, seed=0, bias=-0.2, normalize="none")`: a random SAELens
  StandardSAE for the `tiny` model saved in SAELens' disk format (cfg.json + sae_weights.safetensors);
  returns the folder (load it with `multid.sae.data.sae_loading.load_sae("tiny", 1, sae_path=folder)`).
- `write_mistral_style_pt(path, d_in=32, d_sae=80, seed=0)`: a random SAE in the paper's Mistral `.pt` format
  ({"cfg": <instance of a dataclass defined here>, "state_dict": {...}}); returns the state dict (tensors).
- `write_corpus(folder, n_docs=12, words=60, seed=0)`: text files of tiny-vocabulary words (one document per
  file); returns the sorted list of paths.
- `circle_decoder(F, d, cluster, seed=0)`: W_dec [F, d] float32 whose `cluster` rows lie on the unit circle of
  the plane (e0, e1) in order, the other rows random unit vectors orthogonal to that plane.
- `write_planted_circle_run(run_dir, ...)`: an occurrence run (docs/sae_occurrences.md format) where every
  "circle token" fires two neighbouring cluster features whose weighted decoder sum is exactly the point
  radius * (cos a, sin a) of the plane, plus noise features outside the cluster; returns a `PlantedRun`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

TINY_HOOK = "blocks.1.hook_resid_pre"
TINY_D_MODEL = 64


def make_tiny_sae(folder: Path, d_sae: int = 96, hook: str = TINY_HOOK, seed: int = 0, bias: float = -0.2,
                  normalize: str = "none", d_in: int = TINY_D_MODEL) -> Path:
    """A random SAELens StandardSAE saved to `folder` (see module docstring)."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, device="cpu", normalize_activations=normalize,
                            metadata=SAEMetadata(hook_name=hook, model_name="tiny"))
    torch.manual_seed(seed)
    sae = StandardSAE(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=gen) / d_in**0.5)
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=gen), dim=1))
        sae.b_enc.copy_(bias + 0.05 * torch.randn(d_sae, generator=gen))
        sae.b_dec.copy_(0.01 * torch.randn(d_in, generator=gen))
    sae.save_model(folder)
    return Path(folder)


@dataclass
class PaperSAEConfig:
    """Stands in for the paper's training config class, which our loader does not have (an unknown class)."""

    d_in: int = 32
    expansion_factor: int = 4
    hook_point: str = "blocks.8.hook_resid_pre"
    model_name: str = "mistral-7b"
    l1_coefficient: float = 1e-3
    tags: tuple = ("a", "b")


def write_mistral_style_pt(path: Path, d_in: int = 32, d_sae: int = 80, seed: int = 0,
                           hook: str = "blocks.8.hook_resid_pre") -> dict:
    """A random SAE in the paper's `.pt` layout; the cfg is a pickled instance of `PaperSAEConfig`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {
        "W_enc": torch.randn(d_in, d_sae, generator=gen) / d_in**0.5,
        "b_enc": -0.3 + 0.05 * torch.randn(d_sae, generator=gen),
        "W_dec": torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=gen), dim=1),
        "b_dec": 0.1 * torch.randn(d_in, generator=gen),
    }
    cfg = PaperSAEConfig(d_in=d_in, expansion_factor=d_sae // d_in, hook_point=hook)
    buffer = io.BytesIO()
    torch.save({"cfg": cfg, "state_dict": state}, buffer)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(buffer.getvalue())
    return state


def write_corpus(folder: Path, n_docs: int = 12, words: int = 60, seed: int = 0) -> list[Path]:
    """Text files of words from the tiny model's vocabulary; a few are short (skipped at ctx_len > their length)."""
    from multid.models import TINY_WORDS

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_docs):
        n = words if i % 4 != 3 else 5  # every fourth document is too short for a context
        text = " ".join(rng.choice(TINY_WORDS, size=n))
        path = folder / f"doc{i:03d}.txt"
        path.write_text(text + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def circle_decoder(F: int, d: int, cluster: Sequence[int], seed: int = 0) -> np.ndarray:
    """W_dec with the cluster's rows at angles 2*pi*k/m on the unit circle of the (e0, e1) plane."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(F, d))
    W[:, :2] = 0.0
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    m = len(cluster)
    for k, f in enumerate(cluster):
        W[f] = 0.0
        W[f, 0], W[f, 1] = np.cos(2 * np.pi * k / m), np.sin(2 * np.pi * k / m)
    return W.astype(np.float32)


@dataclass
class PlantedRun:
    run_dir: Path
    cluster: list[int]
    W_dec: np.ndarray
    circle_tokens: np.ndarray  # global token indices of the circle points, ascending
    angles: np.ndarray  # planted angle of each circle token
    radius: float
    token_ids: np.ndarray  # [n_contexts, ctx_len]


def write_planted_circle_run(run_dir: Path, *, n_contexts: int = 12, ctx_len: int = 16, F: int = 40, d: int = 12,
                             cluster: Sequence[int] = (3, 9, 17, 21, 30), radius: float = 2.0,
                             fire_prob: float = 0.5, noise_features: int = 3, num_shards: int = 1,
                             contexts_per_part: int = 4, seed: int = 0, meta: dict | None = None) -> PlantedRun:
    """An occurrence run with a planted circle (see module docstring)."""
    from multid.sae.data.occurrence_store import write_occurrence_run

    rng = np.random.default_rng(seed)
    cluster = [int(c) for c in cluster]
    m = len(cluster)
    W = circle_decoder(F, d, cluster, seed)
    others = np.array([f for f in range(F) if f not in set(cluster)])
    n_tok = n_contexts * ctx_len
    token_ids = rng.integers(3, 60, size=(n_contexts, ctx_len)).astype(np.int32)
    circle = np.flatnonzero(rng.random(n_tok) < fire_prob)
    angles = rng.uniform(0, 2 * np.pi, size=len(circle))
    rows: list[tuple[int, int, float]] = []
    for t, a in zip(circle.tolist(), angles.tolist()):
        k = int(np.floor(a / (2 * np.pi / m))) % m
        a0, a1 = 2 * np.pi * k / m, 2 * np.pi * (k + 1) / m
        basis = np.array([[np.cos(a0), np.cos(a1)], [np.sin(a0), np.sin(a1)]])
        w = np.linalg.solve(basis, radius * np.array([np.cos(a), np.sin(a)]))
        for j, weight in ((k, w[0]), ((k + 1) % m, w[1])):
            if weight > 1e-6:
                rows.append((t, cluster[j], float(weight)))
    for t in range(n_tok):
        for f in rng.choice(others, size=noise_features, replace=False):
            rows.append((t, int(f), float(rng.uniform(0.1, 1.0))))
    arr = np.array(rows, dtype=np.float64)
    meta = {"model": "synthetic", "layer": 0, "hook": "blocks.0.hook_resid_pre", "sae_tag": "planted", **(meta or {})}
    write_occurrence_run(run_dir, token_ids, arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int32),
                         arr[:, 2].astype(np.float32), meta=meta, num_shards=num_shards,
                         contexts_per_part=contexts_per_part, W_dec=W)
    return PlantedRun(Path(run_dir), cluster, W, circle.astype(np.int64), angles, radius, token_ids)

