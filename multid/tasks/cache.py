"""Activation caches of a task: one batched forward pass, per-layer residual files, results.csv, PCA files.

A cache folder is one stage (`multid.stage`): its record holds the fingerprint (model, dtype, template,
answer-token rule, code version) and the size of every file, so a truncated layer file is noticed, and
a rebuild swaps in only a complete folder (a failing model load never removes a good cache). PCA files
are stages derived from the cache (their settings hold its `artifact_id`). Readers (`TaskCache.open`)
refuse a damaged cache with the command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from multid.tasks import paths
from multid.tasks.spec import (
    Problem,
    TaskSpec,
    TokenLayout,
    align_problems,
    answer_token_ids,
    generate_problems,
    model_tokenize,
    token_map,
)
from multid.errors import MissingArtifactError, UserError
from multid.io import load_json, load_pt, save_csv, save_json, save_pt
from multid.models import model_fingerprint
from multid.stage import Stage, artifact_id, damage, is_current, run_stage

CACHE_VERSION = 1
PCA_VERSION = 1
RESULTS_COLUMNS = ("a", "b", "c", "ground_truth", "model_out", "model_correct", "best_token")
RMS_EPS = 1e-5


def cache_fingerprint(spec: TaskSpec, model: str, model_path: str | None, dtype: str, answer_mode: str,
                      base_dir: Path | None = None) -> dict[str, Any]:
    """Everything that changes the numbers in a task cache (a fine-tuned model's weights live under base_dir)."""
    return {
        "cache_version": CACHE_VERSION,
        "task": spec.name,
        "template": spec.template,
        "p": spec.p,
        "model": model_fingerprint(model, model_path, dtype, base_dir=base_dir),
        "answer_tokens": answer_mode,
    }


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def resid_hook_name(layer: int) -> str:
    """Hook whose output is cache layer `layer`: the residual entering block `layer`.

    Cache layer 0 is `blocks.0.hook_resid_pre` (upstream used `hook_embed`, identical for the rotary
    models it ran; for GPT-2 resid_pre also holds the positional embedding, which is what enters block 0).
    """
    return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


# ----------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class PcaFit:
    """A PCA of one (layer, token) slice: coords = (acts - mean) @ components.T."""

    coords: np.ndarray  # [n, k]
    mean: np.ndarray  # [d]
    components: np.ndarray  # [k, d], orthonormal rows
    explained_variance_ratio: np.ndarray  # [k]

    def transform(self, acts: np.ndarray) -> np.ndarray:
        return (np.asarray(acts) - self.mean) @ self.components.T


class TaskCache:
    """Read access to a finished task cache; needs no model."""

    def __init__(self, folder: Path, meta: dict[str, Any]):
        self.folder = folder
        self.meta = meta
        self._layer_memo: dict[int, torch.Tensor] = {}

    @classmethod
    def open(cls, base_dir: str | Path, model: str, task: str) -> "TaskCache":
        """Open `<base_dir>/<model>_<task>` if it is complete and undamaged, else say which command (re)builds it."""
        folder = paths.task_dir(base_dir, model, task)
        command = paths.build_cache_command(model, task, base_dir=base_dir)
        if not paths.meta_path(folder).exists():
            raise MissingArtifactError(f"activation cache for {model} / {task}", folder, command)
        problem = damage(folder, is_dir=True)
        if problem == "no stage record":
            raise UserError(f"the activation cache {folder} has no readable stage record (made by an older version of "
                            f"multid, or the record is damaged); rebuild it with: {command}")
        if problem is not None:
            raise UserError(f"the activation cache {folder} is damaged ({problem}); rebuild it with: {command}")
        return cls(folder, load_json(paths.meta_path(folder)))

    @cached_property
    def artifact_id(self) -> str:
        """Identity of this finished cache (its stage record), for the settings of stages derived from it."""
        return artifact_id(self.folder, is_dir=True)

    # -- metadata
    @property
    def cache_id(self) -> str:
        return self.meta["cache_id"]

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def p(self) -> int:
        return int(self.meta["p"])

    @cached_property
    def layout(self) -> TokenLayout:
        return TokenLayout.from_json(self.meta["layout"])

    @cached_property
    def problems(self) -> list[Problem]:
        return [Problem(item["prompt"], item["target"], tuple(item["info"])) for item in self.meta["problems"]]

    @cached_property
    def infos(self) -> np.ndarray:
        """[n, 3] int array of (a, b, c) in problem order."""
        return np.array([problem.info for problem in self.problems], dtype=np.int64)

    @property
    def n_cache_layers(self) -> int:
        return int(self.meta["n_cache_layers"])

    @property
    def answer_token_ids(self) -> list[int]:
        return list(self.meta["answer_token_ids"])

    @property
    def token_map(self) -> dict[int, str]:
        return {int(position): text for position, text in self.meta["token_map"].items()}

    def results(self):
        path = paths.results_csv_path(self.folder)
        if not path.exists():
            command = paths.build_cache_command(self.model, self.task, base_dir=self.folder.parent)
            raise MissingArtifactError(f"results.csv of the {self.model} {self.task} cache", path, command)
        return paths.load_results_csv(path)

    # -- activations
    def layer_acts(self, layer: int) -> torch.Tensor:
        """Residual stream at cache layer `layer`: [n, seq_len, d_model] float32."""
        if not 0 <= layer < self.n_cache_layers:
            raise UserError(f"layer {layer} is outside this cache's layers 0..{self.n_cache_layers - 1}")
        if layer not in self._layer_memo:
            path = paths.layer_acts_path(self.folder, layer)
            if not path.exists():
                command = paths.build_cache_command(self.model, self.task, base_dir=self.folder.parent)
                raise MissingArtifactError(f"layer {layer} activations of the {self.model} {self.task} cache", path, command)
            self._layer_memo.clear()  # keep one layer in memory: sweeps go layer by layer
            self._layer_memo[layer] = load_pt(path)
        return self._layer_memo[layer]

    def get_acts(self, layer: int, token: int, normalize_rms: bool = False) -> torch.Tensor:
        """[n, d_model] activations at (cache layer, token position); optional RMS normalisation.

        The slice is read from the layer file by index (upstream's `get_acts` returned another slice on
        its first call, because the loop writing all slices overwrote the requested file name).
        """
        if not 0 <= token < self.layout.seq_len:
            raise UserError(f"token position {token} is outside 0..{self.layout.seq_len - 1}")
        acts = self.layer_acts(layer)[:, token, :]
        if normalize_rms:
            acts = acts / torch.sqrt(acts.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS)
        return acts

    def pca_stage(self, layer: int, token: int, k: int, normalize_rms: bool = False) -> Stage:
        """The stage of the PCA file `pca/layer{L}_token{T}_pca{k}[_normalize].pt` (derived from this cache)."""
        path = paths.pca_path(self.folder, layer, token, k)
        if normalize_rms:
            path = path.with_name(path.stem + "_normalize.pt")
        settings = {"cache": self.artifact_id, "layer": layer, "token": token, "k": k, "normalize_rms": normalize_rms,
                    "version": PCA_VERSION}
        command = paths.build_cache_command(self.model, self.task, pca_k=k, base_dir=self.folder.parent)
        return Stage(f"PCA-{k} of layer {layer} token {token} ({self.model} / {self.task})", path, settings, command)

    def get_pca(self, layer: int, token: int, k: int, normalize_rms: bool = False) -> PcaFit:
        """PCA-k of the (layer, token) slice, fitted once and stored as `pca/layer{L}_token{T}_pca{k}.pt`."""
        fitted: list[PcaFit] = []

        def build(tmp: Path) -> None:
            fit = fit_pca(self.get_acts(layer, token, normalize_rms).double().numpy(), k)
            meta = {"cache_id": self.cache_id, "layer": layer, "token": token, "k": k, "normalize_rms": normalize_rms}
            save_pt(tmp, pca_to_dict(fit, meta))
            fitted.append(fit)

        stage = self.pca_stage(layer, token, k, normalize_rms)
        if is_current(stage):  # the read path takes no lock, so a read-only cache can be read
            return pca_from_dict(load_pt(stage.path))
        path = run_stage(stage, build)
        return fitted[0] if fitted else pca_from_dict(load_pt(path))


def prompt_tokens(model, cache: TaskCache) -> torch.Tensor:
    """[n, seq_len] token ids of the cache's (aligned) prompts for `model`, checked against the cache layout."""
    tokens = model.to_tokens([problem.prompt for problem in cache.problems])
    if tokens.shape[1] != cache.layout.seq_len:
        raise UserError(
            f"the model tokenizes the cached prompts to length {tokens.shape[1]}, but cache {cache.folder} says "
            f"{cache.layout.seq_len}; rebuild the cache for this model (--force)"
        )
    return tokens


def fit_pca(acts: np.ndarray, k: int) -> PcaFit:
    """sklearn PCA (mean-centred, full SVD, sign-fixed), as upstream's `get_acts_pca`."""
    from sklearn.decomposition import PCA

    if not 1 <= k <= min(acts.shape):
        raise UserError(f"PCA k={k} must be between 1 and min(n_problems, d_model) = {min(acts.shape)}")
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant slice (e.g. a fixed word at layer 0)
        pca = PCA(n_components=k, svd_solver="full").fit(acts)
    return PcaFit(
        coords=pca.transform(acts).astype(np.float32),
        mean=pca.mean_.astype(np.float32),
        components=pca.components_.astype(np.float32),
        explained_variance_ratio=np.nan_to_num(pca.explained_variance_ratio_).astype(np.float32),
    )


def pca_to_dict(fit: PcaFit, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "coords": torch.from_numpy(fit.coords),
        "mean": torch.from_numpy(fit.mean),
        "components": torch.from_numpy(fit.components),
        "explained_variance_ratio": torch.from_numpy(fit.explained_variance_ratio),
        "meta": meta,
    }


def pca_from_dict(stored: dict[str, Any]) -> PcaFit:
    return PcaFit(
        coords=stored["coords"].numpy(),
        mean=stored["mean"].numpy(),
        components=stored["components"].numpy(),
        explained_variance_ratio=stored["explained_variance_ratio"].numpy(),
    )


# ----------------------------------------------------------------------------------------- building


def cache_stage(
    spec: TaskSpec, model_name: str, base_dir: Path, model_path: str | None = None, dtype: str = "float32",
    answer_mode: str = "continuation",
) -> Stage:
    """The task cache folder as a stage: its settings are the cache fingerprint."""
    return Stage(
        f"activation cache for {model_name} / {spec.name}",
        paths.task_dir(base_dir, model_name, spec.name),
        cache_fingerprint(spec, model_name, model_path, dtype, answer_mode, base_dir=base_dir),
        command=paths.build_cache_command(model_name, spec.name, base_dir=base_dir),
        is_dir=True,
    )


def build_task_cache(
    spec: TaskSpec,
    model_name: str,
    base_dir: Path,
    load_model_fn,
    model_path: str | None = None,
    dtype: str = "float32",
    answer_mode: str = "continuation",
    batch_size: int = 64,
    force: bool = False,
) -> TaskCache:
    """Build (or reuse) the cache of `spec` for a model. `load_model_fn()` is called only if needed.

    The new cache is written to a temporary sibling folder and swapped in only when complete, so a
    failing model load or forward pass leaves the previous complete cache (and its PCA files) in place.
    """
    stage = cache_stage(spec, model_name, base_dir, model_path, dtype, answer_mode)

    def build(tmp: Path) -> None:
        model = load_model_fn()
        meta = compute_and_write_cache(spec, model, tmp, stage.settings, answer_mode, batch_size)
        meta["model"] = model_name
        save_json(paths.meta_path(tmp), meta)  # derived PCA files and probes start afresh in the new folder

    run_stage(stage, build, force=force)
    return TaskCache.open(base_dir, model_name, spec.name)


def compute_and_write_cache(
    spec: TaskSpec, model, folder: Path, fingerprint: dict[str, Any], answer_mode: str, batch_size: int
) -> dict[str, Any]:
    """Forward all problems in batches; write per-layer residuals and results.csv; return meta."""
    tokenize = model_tokenize(model)
    problems, layout = align_problems(spec, generate_problems(spec), tokenize)
    answer_ids = answer_token_ids(spec.allowable_tokens, tokenize, problems[0].prompt, answer_mode)
    tokens = model.to_tokens([problem.prompt for problem in problems])
    if tokens.shape[1] != layout.seq_len:
        raise UserError(f"batched tokenization gave length {tokens.shape[1]}, expected {layout.seq_len}")
    n_cache_layers = model.cfg.n_layers + 1
    resid, last_logits = collect_residuals(model, tokens, n_cache_layers, batch_size)
    if resid.shape[:2] != (n_cache_layers, len(problems)):
        raise RuntimeError(f"cache shape {tuple(resid.shape)} does not cover {len(problems)} problems x {n_cache_layers} layers")
    for layer in range(n_cache_layers):
        save_pt(paths.layer_acts_path(folder, layer), resid[layer].clone())  # clone: a view would save the whole stack
    rows = results_rows(spec, model, problems, last_logits, answer_ids)
    save_csv(paths.results_csv_path(folder), RESULTS_COLUMNS, rows)
    return {
        "fingerprint": fingerprint,
        "cache_id": fingerprint_id(fingerprint),
        "task": spec.name,
        "p": spec.p,
        "n_problems": len(problems),
        "n_cache_layers": n_cache_layers,
        "d_model": model.cfg.d_model,
        "seq_len": layout.seq_len,
        "positions": {"b_token": layout.b_token, "a_token": layout.a_token, "before_c_token": layout.before_c_token},
        "layout": layout.to_json(),
        "important_tokens": layout.important_tokens(),
        "token_map": {str(position): text for position, text in token_map(model, problems[0].prompt, layout).items()},
        "problems": [{"prompt": p.prompt, "target": p.target, "info": list(p.info)} for p in problems],
        "answer_words": list(spec.allowable_tokens),
        "answer_token_ids": answer_ids,
        "answer_token_strings": [model.to_string([token_id]) for token_id in answer_ids],
        "answer_tokens": answer_mode,
    }


@torch.no_grad()
def collect_residuals(model, tokens: torch.Tensor, n_cache_layers: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual stream at every cache layer and position, plus last-position logits, in batches.

    Returns resid [n_cache_layers, n, seq, d] float32 on CPU and logits [n, vocab] float32 on CPU.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    names = [resid_hook_name(layer) for layer in range(n_cache_layers)]
    wanted = set(names)
    resid_batches, logit_batches = [], []
    starts = range(0, tokens.shape[0], batch_size)
    for start in tqdm(starts, desc="caching activations", unit="batch", leave=False, disable=len(starts) < 2):
        batch = tokens[start : start + batch_size].to(model.cfg.device)
        logits, cache = model.run_with_cache(batch, names_filter=lambda name: name in wanted)
        resid_batches.append(torch.stack([cache[name].float().cpu() for name in names]))
        logit_batches.append(logits[:, -1, :].float().cpu())
        del cache, logits
    return torch.cat(resid_batches, dim=1), torch.cat(logit_batches, dim=0)


def results_rows(
    spec: TaskSpec, model, problems: Sequence[Problem], last_logits: torch.Tensor, answer_ids: Sequence[int]
) -> list[tuple]:
    """results.csv rows: greedy full-vocab answer, exact-match flag, best allowable word by logit."""
    rows = []
    greedy = last_logits.argmax(dim=-1).tolist()
    best = last_logits[:, list(answer_ids)].argmax(dim=-1).tolist()
    for problem, greedy_id, best_index in zip(problems, greedy, best):
        a, b, c = problem.info
        model_out = model.to_string([greedy_id]).strip()
        rows.append((a, b, c, problem.target, model_out, model_out == problem.target, spec.allowable_tokens[best_index]))
    return rows


def ensure_pca_files(cache: TaskCache, k: int, layers: Sequence[int] | None = None, tokens: Sequence[int] | None = None) -> int:
    """Fit PCA-k for every (layer, token) asked (default: all layers x important tokens). Returns count."""
    layers = range(cache.n_cache_layers) if layers is None else layers
    tokens = cache.layout.important_tokens() if tokens is None else tokens
    pairs = [(layer, token) for layer in layers for token in tokens]
    for layer, token in tqdm(pairs, desc=f"PCA-{k} files", unit="file", leave=False):
        cache.get_pca(layer, token, k)
    return len(pairs)
