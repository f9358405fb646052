"""Activation patching on the weekday/month tasks (upstream `task.py`: `activation_patching`), spec §1.6.

Pairs. An ordered pair (clean i, corrupted j) agrees with j in exactly the kept field of info = (a, b, c)
(a for keep-same-a, b for keep-same-b), differs in the other two, and the two target words start with
different letters (Tuesday/Thursday, Saturday/Sunday, June/July/January are never paired). For each i
the first `limit_per_example` (10) partners j in problem order are kept; the list is shuffled and the
first `num_pairs` (20) are used.
Upstream shuffled with the global numpy RNG, which its problem generation had just re-seeded to 42
and advanced by one shuffle of the n problems. We reproduce that state without touching global state:
`RandomState(seed)`, one dummy shuffle of n items (it draws exactly what shuffling the problem list
drew), then the shuffle of the pair list. This assumes, as the spec does, that nothing else drew from
the global RNG in between.

Metric. LD = logit[clean answer] - logit[corrupted answer] at the last position, with the cache's
answer token ids; score = (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt): 0 = no effect,
1 = fully restored. There is no guard for a near-zero denominator (as upstream); LD_clean and
LD_corrupt are saved beside the scores so such pairs can be spotted.

Sites. Clean activations are copied into the corrupted run at one site per forward pass:
- resid: `blocks.L.hook_resid_post`, attention: `blocks.L.hook_attn_out`, mlp: `blocks.L.hook_mlp_out`,
  for every layer L and position -> scores [pairs, n_layers, seq_len];
- attention_head: `blocks.L.attn.hook_z` of one head at one position (the last prompt token), the
  head's whole contribution to the residual, for layers lo..hi-1 -> scores [pairs, hi - lo, n_heads].
TransformerLens has no resid_post helper (upstream's helpers cover resid_pre); resid_post follows the
spec. resid_pre of layer L equals resid_post of layer L-1, so the two grids differ by a one-layer shift.

Speed. Instead of one full forward per (pair, site), all pairs that patch the same (layer L, position
t) run as one batch that starts at block L from the corrupted run's residual stream and computes only
positions t.., reading keys and values of positions < t from the corrupted run (a patch at t cannot
change earlier positions in a causal model). A site whose clean and corrupted activations are equal
(e.g. positions before the first differing token) leaves the run unchanged and gets score 0 without a
forward pass. Results match one-at-a-time TransformerLens patching (tests/test_patching.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from multid.config import figure_dir
from multid.errors import MissingArtifactError, UserError
from multid.io import load_npz, save_npz

from multid.tasks.cache import TaskCache, prompt_tokens
from multid.circles.engine import answer_logits, frozen_kv_cache

PATCHING_VERSION = 1
LAYER_TYPES = ("resid", "mlp", "attention", "attention_head")
KEEP_SAME = ("a", "b")
KEEP_SAME_INDEX = {"a": 0, "b": 1}
HOOKS = {
    "resid": "hook_resid_post",
    "mlp": "hook_mlp_out",
    "attention": "hook_attn_out",
    "attention_head": "attn.hook_z",
}
UPSTREAM_HEAD_LAYERS = (12, 32)  # for 32-layer models
DEFAULT_NUM_PAIRS = 20
DEFAULT_LIMIT_PER_EXAMPLE = 10
DEFAULT_SEED = 42


# ----------------------------------------------------------------------------------------- pairs


def patching_pairs(
    infos: np.ndarray,
    targets: Sequence[str],
    keep_same: str,
    num_pairs: int = DEFAULT_NUM_PAIRS,
    limit_per_example: int = DEFAULT_LIMIT_PER_EXAMPLE,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """[m, 2] (clean, corrupted) problem indices, m <= num_pairs, by the rule in the module docstring."""
    kept = KEEP_SAME_INDEX[check_keep_same(keep_same)]
    infos = np.asarray(infos)
    n = len(infos)
    candidates = []
    for i in range(n):
        partners = 0
        for j in range(n):
            if partners >= limit_per_example:
                break
            same = infos[i] == infos[j]
            if same[kept] and same.sum() == 1 and targets[i][0] != targets[j][0]:
                candidates.append((i, j))
                partners += 1
    rng = np.random.RandomState(seed)
    rng.shuffle(list(range(n)))  # replay upstream's problem shuffle so the next draw matches
    rng.shuffle(candidates)
    return np.array(candidates[:num_pairs], dtype=np.int64).reshape(-1, 2)


def check_keep_same(keep_same: str) -> str:
    if keep_same not in KEEP_SAME:
        raise UserError(f"keep_same must be one of {', '.join(KEEP_SAME)}; got {keep_same!r}")
    return keep_same


def check_layer_type(layer_type: str) -> str:
    if layer_type not in LAYER_TYPES:
        raise UserError(f"unknown layer type {layer_type!r}; choose from {', '.join(LAYER_TYPES)}")
    return layer_type


def default_head_layers(n_layers: int) -> tuple[int, int]:
    """Upstream's (12, 32) for 32-layer models; the same fraction of depth (to the last layer) otherwise."""
    return int(round(UPSTREAM_HEAD_LAYERS[0] * n_layers / 32)), n_layers


def check_head_layers(head_layers: Sequence[int], n_layers: int) -> tuple[int, int]:
    lo, hi = (int(value) for value in head_layers)
    if not 0 <= lo < hi <= n_layers:
        raise UserError(f"head layers {lo} {hi} must satisfy 0 <= LO < HI <= {n_layers} (n_layers of this model)")
    return lo, hi


def head_settings(
    cache: TaskCache, n_layers: int, layer_type: str, head_layers: Sequence[int] | None, head_position: int | None
) -> tuple[tuple[int, int], int]:
    """(head layers, head position), checked: by default `default_head_layers(n_layers)` and the last prompt token."""
    head_layers = check_head_layers(head_layers or default_head_layers(n_layers), n_layers)
    head_position = cache.layout.before_c_token if head_position is None else int(head_position)
    if layer_type == "attention_head" and not 0 <= head_position < cache.layout.seq_len:
        raise UserError(f"head position {head_position} is outside 0..{cache.layout.seq_len - 1}")
    return head_layers, head_position


# ----------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PatchingResult:
    """Scores of one (layer type, keep-same) sweep; axis 1 indexes `layers`, axis 2 indexes `sites`."""

    scores: np.ndarray  # [pairs, len(layers), len(sites)] float32
    pairs: np.ndarray  # [pairs, 2] (clean, corrupted) problem indices
    pair_infos: np.ndarray  # [pairs, 2, 3] (a, b, c) of clean and corrupted
    layers: np.ndarray  # layer index of each row of axis 1
    sites: np.ndarray  # positions (resid/mlp/attention) or head indices (attention_head)
    ld_clean: np.ndarray  # [pairs]
    ld_corrupt: np.ndarray  # [pairs]
    position_labels: np.ndarray  # [seq_len] token strings of the first clean prompt
    cache_id: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        return self.scores.mean(axis=0)


def patching_params(
    layer_type: str,
    keep_same: str,
    num_pairs: int,
    limit_per_example: int,
    seed: int,
    head_layers: tuple[int, int] | None,
    head_position: int | None,
) -> dict[str, Any]:
    """Everything besides the cache that changes a sweep's numbers (stored with it)."""
    return {
        "version": PATCHING_VERSION,
        "layer_type": layer_type,
        "keep_same": keep_same,
        "num_pairs": num_pairs,
        "limit_per_example": limit_per_example,
        "seed": seed,
        "head_layers": list(head_layers) if layer_type == "attention_head" else None,
        "head_position": head_position if layer_type == "attention_head" else None,
    }


def patching_dir(base_dir: Path, model: str, task: str) -> Path:
    return figure_dir(base_dir, "patching", model, task)


def patching_path(base_dir: Path, model: str, task: str, layer_type: str, keep_same: str, num_pairs: int) -> Path:
    """`<base_dir>/figs/<model>_<task>/patching/<layer_type>/keep-same-<a|b>_n<pairs>.npz`."""
    return patching_dir(base_dir, model, task) / layer_type / f"keep-same-{keep_same}_n{num_pairs}.npz"


def patching_command(model: str, task: str, num_pairs: int, base_dir: Path | None = None) -> str:
    """The command that writes every patching sweep of one model/task."""
    command = f"python3 intervention/activation_patching.py --model {model} --task {task} --num_pairs {num_pairs}"
    return command + (f" --base_dir {base_dir}" if base_dir is not None else "")


def save_patching_result(path: Path, result: PatchingResult) -> Path:
    return save_npz(
        path,
        scores=result.scores,
        pairs=result.pairs,
        pair_infos=result.pair_infos,
        layers=result.layers,
        sites=result.sites,
        ld_clean=result.ld_clean,
        ld_corrupt=result.ld_corrupt,
        position_labels=result.position_labels,
        cache_id=np.array(result.cache_id),
        params=np.array(json.dumps(result.params, sort_keys=True)),
    )


def read_patching_result(path: Path) -> PatchingResult:
    data = load_npz(path)
    return PatchingResult(
        scores=data["scores"],
        pairs=data["pairs"],
        pair_infos=data["pair_infos"],
        layers=data["layers"],
        sites=data["sites"],
        ld_clean=data["ld_clean"],
        ld_corrupt=data["ld_corrupt"],
        position_labels=data["position_labels"],
        cache_id=str(data["cache_id"]),
        params=json.loads(str(data["params"])),
    )


def load_patching_result(
    base_dir: Path, model: str, task: str, layer_type: str, keep_same: str, num_pairs: int = DEFAULT_NUM_PAIRS,
    cache_id: str | None = None,
) -> PatchingResult:
    """A saved sweep; if `cache_id` is given it must match (else the sweep is stale). No model needed."""
    path = patching_path(base_dir, model, task, check_layer_type(layer_type), check_keep_same(keep_same), num_pairs)
    command = patching_command(model, task, num_pairs, base_dir)
    if not path.exists():
        raise MissingArtifactError(f"{layer_type} patching (keep same {keep_same}) for {model} / {task}", path, command)
    result = read_patching_result(path)
    if cache_id is not None and result.cache_id != cache_id:
        raise UserError(f"{path} was computed from an older activation cache; recompute it with: {command}")
    return result


def is_current(path: Path, cache_id: str, params: dict[str, Any]) -> bool:
    """True if `path` holds a sweep for this cache and these parameters."""
    if not path.exists():
        return False
    try:
        result = read_patching_result(path)
    except (UserError, KeyError):
        return False
    return result.cache_id == cache_id and result.params == params


# ----------------------------------------------------------------------------------------- running


def logit_diff(model, final_resid: torch.Tensor, answer_pairs: torch.Tensor) -> torch.Tensor:
    """logit[clean answer] - logit[corrupted answer] per row, float32 on CPU."""
    logits = answer_logits(model, final_resid, answer_pairs).float()
    return (logits[:, 0] - logits[:, 1]).cpu()


def run_patched(
    model,
    start_resid: torch.Tensor,
    layer: int,
    hook_name: str,
    index: tuple[torch.Tensor, ...],
    values: torch.Tensor,
    past_kv,
) -> torch.Tensor:
    """Run blocks layer.. on `start_resid` [rows, pos, d] with act[index] = values at `hook_name`.

    Returns the residual after the last block at the last position, [rows, d].
    """

    def patch(act: torch.Tensor, hook) -> torch.Tensor:
        act[tuple(i.to(act.device) for i in index)] = values.to(act.device, act.dtype)
        return act

    with model.hooks(fwd_hooks=[(hook_name, patch)]):
        out = model(start_resid, start_at_layer=layer, stop_at_layer=model.cfg.n_layers, past_kv_cache=past_kv)
    return out[:, -1, :]


@torch.no_grad()
def patch_sweep(
    model,
    tokens: torch.Tensor,
    pairs: np.ndarray,
    answer_pairs: np.ndarray,
    layer_type: str,
    layers: Sequence[int],
    head_position: int | None = None,
    max_rows: int = 512,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores [pairs, len(layers), sites], LD_clean [pairs], LD_corrupt [pairs] for one layer type.

    `tokens` [n, seq] are all problems; `pairs` [P, 2] (clean, corrupted) indices into them;
    `answer_pairs` [P, 2] the (clean, corrupted) answer token ids. Sites are all positions, or all
    heads at `head_position` for attention_head.
    """
    check_layer_type(layer_type)
    n_layers, seq_len = model.cfg.n_layers, tokens.shape[1]
    heads = layer_type == "attention_head"
    if heads and head_position is None:
        raise ValueError("attention_head patching needs head_position")
    used = sorted(set(pairs.ravel().tolist()))
    row_of = {problem: k for k, problem in enumerate(used)}
    clean_rows = torch.tensor([row_of[i] for i in pairs[:, 0]])
    corrupt_rows = torch.tensor([row_of[j] for j in pairs[:, 1]])
    first = min(layers)
    names = {f"blocks.{n_layers - 1}.hook_resid_post"}
    for layer in layers:
        names |= {f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.{HOOKS[layer_type]}"}
    for layer in range(first, n_layers):
        names |= {f"blocks.{layer}.attn.hook_k", f"blocks.{layer}.attn.hook_v"}
    _, acts = model.run_with_cache(tokens[used].to(model.cfg.device), names_filter=lambda name: name in names)
    keys = [acts[f"blocks.{layer}.attn.hook_k"][corrupt_rows] if layer >= first else None for layer in range(n_layers)]
    kv_values = [acts[f"blocks.{layer}.attn.hook_v"][corrupt_rows] if layer >= first else None for layer in range(n_layers)]

    answers = torch.as_tensor(answer_pairs, dtype=torch.long)
    final = acts[f"blocks.{n_layers - 1}.hook_resid_post"][:, -1, :]
    ld_clean = logit_diff(model, final[clean_rows], answers)
    ld_corrupt = logit_diff(model, final[corrupt_rows], answers)
    n_sites = model.cfg.n_heads if heads else seq_len
    patched_ld = ld_corrupt[:, None, None].repeat(1, len(layers), n_sites)  # unchanged sites keep LD_corrupt

    for li, layer in enumerate(tqdm(layers, desc=f"{layer_type} patching", unit="layer", disable=not progress, leave=False)):
        hook_name = f"blocks.{layer}.{HOOKS[layer_type]}"
        start = acts[f"blocks.{layer}.hook_resid_pre"][corrupt_rows]
        clean = acts[hook_name][clean_rows]
        corrupt = acts[hook_name][corrupt_rows]
        if heads:  # sites are heads, all at one position: [P, H, d_head]
            clean, corrupt = clean[:, head_position], corrupt[:, head_position]
        changed = (clean != corrupt).flatten(2).any(dim=2).cpu()  # [P, sites]
        pair_of, site_of = torch.nonzero(changed, as_tuple=True)  # one row per site that changes anything
        position_of = torch.full_like(site_of, head_position) if heads else site_of
        for position in position_of.unique().tolist():  # rows patching the same position share a batch
            for chunk in torch.nonzero(position_of == position).flatten().split(max_rows):
                pair, site = pair_of[chunk], site_of[chunk]
                rows, zeros = torch.arange(len(chunk)), torch.zeros(len(chunk), dtype=torch.long)
                index = (rows, zeros, site) if heads else (rows, zeros)
                past = frozen_kv_cache(keys, kv_values, pair, position, first_layer=layer)
                final_chunk = run_patched(
                    model, start[pair.to(start.device), position:], layer, hook_name, index,
                    clean[pair.to(clean.device), site.to(clean.device)], past,
                )
                patched_ld[pair, li, site] = logit_diff(model, final_chunk, answers[pair])
    denominator = (ld_clean - ld_corrupt)[:, None, None]
    scores = (patched_ld - ld_corrupt[:, None, None]) / denominator
    return scores.numpy().astype(np.float32), ld_clean.numpy(), ld_corrupt.numpy()


def activation_patching(
    model,
    cache: TaskCache,
    keep_same: str,
    layer_type: str,
    num_pairs: int = DEFAULT_NUM_PAIRS,
    limit_per_example: int = DEFAULT_LIMIT_PER_EXAMPLE,
    seed: int = DEFAULT_SEED,
    head_layers: Sequence[int] | None = None,
    head_position: int | None = None,
    max_rows: int = 512,
    progress: bool = True,
) -> PatchingResult:
    """One patching sweep (no file IO): pairs by the upstream rule, then `patch_sweep`.

    head_layers and head_position default as in `head_settings`.
    """
    check_layer_type(layer_type)
    n_layers = model.cfg.n_layers
    head_layers, head_position = head_settings(cache, n_layers, layer_type, head_layers, head_position)
    targets = [problem.target for problem in cache.problems]
    pairs = patching_pairs(cache.infos, targets, keep_same, num_pairs, limit_per_example, seed)
    if len(pairs) == 0:
        raise UserError(f"no keep-same-{keep_same} pairs exist for {cache.task}")
    ids = np.asarray(cache.answer_token_ids)
    infos = cache.infos
    answer_pairs = np.stack([ids[infos[pairs[:, 0], 2]], ids[infos[pairs[:, 1], 2]]], axis=1)
    tokens = prompt_tokens(model, cache)
    if layer_type == "attention_head":
        layers, sites = list(range(*head_layers)), np.arange(model.cfg.n_heads)
    else:
        layers, sites = list(range(n_layers)), np.arange(cache.layout.seq_len)
    scores, ld_clean, ld_corrupt = patch_sweep(
        model, tokens, pairs, answer_pairs, layer_type, layers, head_position, max_rows, progress
    )
    return PatchingResult(
        scores=scores,
        pairs=pairs,
        pair_infos=np.stack([infos[pairs[:, 0]], infos[pairs[:, 1]]], axis=1),
        layers=np.array(layers, dtype=np.int64),
        sites=sites.astype(np.int64),
        ld_clean=ld_clean,
        ld_corrupt=ld_corrupt,
        position_labels=np.array(model.to_str_tokens(cache.problems[int(pairs[0, 0])].prompt)),
        cache_id=cache.cache_id,
        params=patching_params(layer_type, keep_same, num_pairs, limit_per_example, seed, head_layers, head_position),
    )


def run_or_load_patching(
    get_model: Callable[[], Any],
    cache: TaskCache,
    keep_same: str,
    layer_type: str,
    num_pairs: int = DEFAULT_NUM_PAIRS,
    limit_per_example: int = DEFAULT_LIMIT_PER_EXAMPLE,
    seed: int = DEFAULT_SEED,
    head_layers: Sequence[int] | None = None,
    head_position: int | None = None,
    force: bool = False,
    max_rows: int = 512,
) -> tuple[PatchingResult, Path, bool]:
    """Reuse the saved sweep if it matches the cache id and parameters, else compute and save it.

    `get_model()` is called only when something must be computed. Returns (result, path, computed).
    The default head layers depend on the model depth, read from the cache (n_cache_layers - 1).
    """
    check_layer_type(layer_type)
    head_layers, head_position = head_settings(cache, cache.n_cache_layers - 1, layer_type, head_layers, head_position)
    params = patching_params(layer_type, keep_same, num_pairs, limit_per_example, seed, head_layers, head_position)
    path = patching_path(cache.folder.parent, cache.model, cache.task, layer_type, keep_same, num_pairs)
    if not force and is_current(path, cache.cache_id, params):
        return read_patching_result(path), path, False
    result = activation_patching(
        get_model(), cache, keep_same, layer_type, num_pairs, limit_per_example, seed, head_layers, head_position, max_rows
    )
    save_patching_result(path, result)
    return result, path, True


# ----------------------------------------------------------------------------------------- heads


def top_heads(mean_grid: np.ndarray, layers: Sequence[int], k: int = 10) -> list[tuple[int, int, float]]:
    """The k (layer, head, effect) cells with the largest mean effect (negatives clipped to 0), best first."""
    clipped = np.clip(np.asarray(mean_grid, dtype=np.float64), 0, None)
    order = np.argsort(-clipped, axis=None, kind="stable")[:k]
    cells = [np.unravel_index(flat, clipped.shape) for flat in order]
    return [(int(layers[row]), int(col), float(clipped[row, col])) for row, col in cells]


@torch.no_grad()
def head_outputs(model, tokens: torch.Tensor, heads: Sequence[tuple[int, int]], position: int, batch_size: int = 64) -> np.ndarray:
    """[n, len(heads), d_model]: each head's output z @ W_O written into the residual at `position`.

    Upstream cached every head at every position (`stack_head_results`, 14-36 GB per model/task);
    only these heads at this one position are needed for the head table.
    """
    layers = sorted({layer for layer, _ in heads})
    names = {f"blocks.{layer}.attn.hook_z" for layer in layers}
    batches = []
    for start in range(0, tokens.shape[0], batch_size):
        _, acts = model.run_with_cache(
            tokens[start : start + batch_size].to(model.cfg.device), names_filter=lambda name: name in names,
            stop_at_layer=max(layers) + 1,
        )
        per_head = [
            acts[f"blocks.{layer}.attn.hook_z"][:, position, head] @ model.W_O[layer, head].to(acts[f"blocks.{layer}.attn.hook_z"].device)
            for layer, head in heads
        ]
        batches.append(torch.stack(per_head, dim=1).float().cpu())
    return torch.cat(batches, dim=0).numpy()


def head_outputs_path(base_dir: Path, model: str, task: str, num_pairs: int, k: int) -> Path:
    return patching_dir(base_dir, model, task) / "attention_head" / f"top{k}_head_outputs_n{num_pairs}.npz"


def combined_head_grid(base_dir: Path, model: str, task: str, num_pairs: int, cache_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean head-patching grid over the same-a and same-b pairs together, and its layer indices."""
    results = [load_patching_result(base_dir, model, task, "attention_head", keep, num_pairs, cache_id) for keep in KEEP_SAME]
    if not np.array_equal(results[0].layers, results[1].layers):
        raise UserError(f"same-a and same-b head patching of {model} / {task} cover different layers; rerun both")
    return np.concatenate([result.scores for result in results]).mean(axis=0), results[0].layers


def run_or_load_head_outputs(
    get_model: Callable[[], Any], cache: TaskCache, num_pairs: int = DEFAULT_NUM_PAIRS, k: int = 10, force: bool = False
) -> tuple[Path, bool]:
    """Write the top-k heads' outputs at the head-patching position for every problem (needs the head sweeps).

    File: `.../patching/attention_head/top<k>_head_outputs_n<pairs>.npz` with outputs [n, k, d_model],
    heads [k, 2], effects [k], infos [n, 3], p, position, cache_id. Reused while heads and cache match.
    """
    base_dir = cache.folder.parent
    grid, layers = combined_head_grid(base_dir, cache.model, cache.task, num_pairs, cache.cache_id)
    chosen = top_heads(grid, layers, k)
    heads = np.array([(layer, head) for layer, head, _ in chosen], dtype=np.int64).reshape(-1, 2)
    position = load_patching_result(base_dir, cache.model, cache.task, "attention_head", "a", num_pairs).params["head_position"]
    path = head_outputs_path(base_dir, cache.model, cache.task, num_pairs, k)
    if not force and path.exists():
        stored = load_npz(path)
        if str(stored["cache_id"]) == cache.cache_id and np.array_equal(stored["heads"], heads) and int(stored["position"]) == position:
            return path, False
    model = get_model()
    outputs = head_outputs(model, prompt_tokens(model, cache), [tuple(h) for h in heads.tolist()], position)
    save_npz(
        path,
        outputs=outputs.astype(np.float32),
        heads=heads,
        effects=np.array([effect for _, _, effect in chosen], dtype=np.float64),
        infos=cache.infos,
        p=np.array(cache.p),
        position=np.array(position),
        cache_id=np.array(cache.cache_id),
    )
    return path, True
