"""Distributed alignment search (DAS): a learned causal subspace beside the probe's circle (docs/das.md).

A probe finds where the start word's value can be read; DAS (Geiger et al. 2023, arXiv 2303.02536) finds where the
model reads it. At one cache layer and the start word it learns W ([d, k], orthonormal columns) such that the
interchange

    x' = x + ((s - x) W) W^T        (x: the base prompt's activation, s: the source prompt's)

makes the model answer the counterfactual c' = (a_source + b_base) mod p. W is kept orthonormal by PyTorch's
orthogonal parametrisation: the same map as pyvene's LowRankRotatedSpaceIntervention, run here through the sweep's
engine (clean prefix keys and values, only the positions from the start word on). The alignment stays linear:
non-linear maps reach perfect interchange accuracy even in random models (arXiv 2507.08802).

It is trained on the fine-tuning phrasings (never the paper's template), and tested on the paper's template and on
the held-out phrasing, on the sweep's runs (problem i, donor j with a = v and the same b, c' = (b + v) mod p).
On those runs each patch is scored by
- interchange accuracy (IIA): the share of runs whose arg-max answer word is c' (chance 1/p);
- its share of patch layer's per-run effect on logit[c] - logit[c'] (multid.circles.controls: 0 none, 1 full).
The patches: no-op, patch layer (the donor's whole activation: the ceiling), DAS of each k, the probe's circle
plane under the same interchange rule, the paper's patch circle (paper template only: its means come from that
cache), and random 2-D planes under the interchange rule (seeded draws: the yardstick).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch
from scipy.linalg import subspace_angles
from tqdm.auto import tqdm

from multid.circles.controls import draw_band, draw_seed, per_run_shares, random_plane
from multid.circles.engine import PrefixKV, metric, model_device, readout_logits
from multid.circles.probe import CircleBasis, InterventionRuns, variant_vectors
from multid.errors import UserError
from multid.tasks.spec import last_token_index, model_tokenize

DAS_VERSION = 1
EVAL_SETS = ("paper", "held_out")


@dataclass(frozen=True)
class DasSettings:
    """How DAS is trained and scored at one layer (every field is part of the stage's settings)."""

    dims: tuple[int, ...] = (2, 8)  # k of each learned subspace
    steps: int = 100
    train_batch: int = 16  # training pairs per step
    lr: float = 0.01
    train_prompts: int = 1024  # seeded sample of the training phrasings' prompts (those the model gets right are kept)
    train_eval_pairs: int = 256  # seeded training pairs on which the trained subspace's IIA is reported
    draws: int = 5  # random 2-D planes under the interchange rule
    eval_runs: int = 300  # seeded sample of the sweep's runs scored per template (0: all; weekdays have 294)
    seed: int = 0

    def check(self) -> "DasSettings":
        if not self.dims or min(self.dims) < 1:
            raise UserError(f"--dims must be positive integers, got {self.dims}")
        if self.eval_runs < 0:
            raise UserError(f"--eval_runs must be >= 0 (0: all), got {self.eval_runs}")
        for name in ("steps", "train_batch", "train_prompts", "train_eval_pairs"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.draws < 0 or not self.lr > 0:
            raise UserError(f"--draws must be >= 0 and --lr > 0, got {self.draws} and {self.lr}")
        return self

    def to_json(self) -> dict:
        return {**asdict(self), "dims": list(self.dims)}


class InterchangeSet(Protocol):
    """Prompts of one task whose start-word activation at one layer can be set and the answer read."""

    infos: np.ndarray  # [n, 3] (a, b, c)
    p: int
    groups: list[np.ndarray]  # rows that one forward pass can take together

    def use_layer(self, layer: int) -> None:
        """Make `layer` the layer whose start-word activation is read and set."""

    def start_acts(self) -> torch.Tensor:
        """[n, d] the start word's activation at the current layer."""

    def answer_logits(self, rows: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """[m, p] answer-word logits with the start word of prompt rows[r] set to vectors[r] (differentiable)."""


# ------------------------------------------------------------------------------------------ prompts


def start_position(tokenize, prompt: str, start_word: str) -> int:
    """Index of the last token of the start word's first occurrence in the prompt (as the task caches place a)."""
    found = prompt.find(start_word)
    if found < 0:
        raise UserError(f"the start word {start_word!r} is not in the prompt {prompt!r}")
    return last_token_index(tokenize, tokenize(prompt), prompt[: found + len(start_word)], "start word")


@contextmanager
def frozen_weights(model) -> Iterator[None]:
    """The model's weights as constants (no weight gradients: about a third of a training step) for the duration."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


class PromptSet:
    """Prompts in any phrasings, grouped by (length, start position) so a group runs as one batch; at one layer at
    a time it holds each prompt's residual from the start word on, and runs the blocks from there.

    The clean keys and values before the start word (`PrefixKV`, every block) are computed once per group.
    """

    def __init__(self, model, prompts: Sequence[str], infos: np.ndarray, start_words: Sequence[str],
                 answer_ids: Sequence[int], p: int, batch_size: int = 64):
        tokenize = model_tokenize(model)
        self.model = model
        self.infos = np.asarray(infos)
        self.p = p
        self.answer_ids = list(answer_ids)
        self.batch_size = batch_size
        tokens = [tokenize(prompt) for prompt in prompts]
        positions = [start_position(tokenize, prompt, start_words[a]) for prompt, (a, _, _) in zip(prompts, self.infos)]
        keys = sorted({(len(ids), position) for ids, position in zip(tokens, positions)})
        self.groups = [np.array([i for i, ids in enumerate(tokens) if (len(ids), positions[i]) == key]) for key in keys]
        self.group_tokens = [torch.tensor([tokens[i] for i in rows]) for rows in self.groups]
        self.group_position = [key[1] for key in keys]
        self.group_of = np.zeros(len(prompts), dtype=np.int64)
        self.slot = np.zeros(len(prompts), dtype=np.int64)
        for g, rows in enumerate(self.groups):
            self.group_of[rows] = g
            self.slot[rows] = np.arange(len(rows))
        self.prefixes: dict[int, PrefixKV] = {}  # group -> clean keys and values, made when the group first runs
        self.layer: int | None = None
        self.suffixes: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.infos)

    @torch.no_grad()
    def use_layer(self, layer: int) -> None:
        """Hold every prompt's residual entering block `layer`, from its start word on."""
        if layer == self.layer:
            return
        suffixes = []
        for tokens, position in zip(self.group_tokens, self.group_position):
            parts = [self.model(tokens[s : s + self.batch_size].to(model_device(self.model)), stop_at_layer=layer)
                     [:, position:, :].float().cpu() for s in range(0, len(tokens), self.batch_size)]
            suffixes.append(torch.cat(parts))
        self.layer, self.suffixes = layer, suffixes

    def prefix(self, group: int) -> PrefixKV:
        if group not in self.prefixes:
            self.prefixes[group] = PrefixKV(self.model, self.group_tokens[group], self.group_position[group],
                                            self.batch_size)
        return self.prefixes[group]

    @torch.no_grad()
    def clean_correct(self) -> np.ndarray:
        """[n] whether the model's own arg-max answer word is right on each prompt (one forward per group, read
        from the final residual: no prefix keys and values are made)."""
        self.use_layer(self.model.cfg.n_layers)
        right = np.zeros(len(self), dtype=bool)
        for rows, suffix in zip(self.groups, self.suffixes):
            logits = readout_logits(self.model, suffix[:, -1, :].to(self.model.cfg.dtype), self.answer_ids)
            right[rows] = logits.argmax(1).cpu().numpy() == self.infos[rows, 2]
        return right

    def start_acts(self) -> torch.Tensor:
        acts = torch.zeros(len(self), self.suffixes[0].shape[-1])
        for rows, suffix in zip(self.groups, self.suffixes):
            acts[torch.as_tensor(rows)] = suffix[:, 0, :]
        return acts

    def answer_logits(self, rows: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            raise RuntimeError("call use_layer(layer) before answer_logits")
        with frozen_weights(self.model):
            return self._answer_logits(np.asarray(rows), vectors)

    def _answer_logits(self, rows_np: np.ndarray, vectors: torch.Tensor) -> torch.Tensor:
        model = self.model
        out = torch.zeros(len(rows_np), self.p)
        for g in np.unique(self.group_of[rows_np]):
            picked = np.flatnonzero(self.group_of[rows_np] == g)
            for start in range(0, len(picked), self.batch_size):
                chunk = picked[start : start + self.batch_size]
                slots = torch.as_tensor(self.slot[rows_np[chunk]])
                resid = self.suffixes[g][slots].to(model_device(model), model.cfg.dtype)
                resid = torch.cat([vectors[torch.as_tensor(chunk)][:, None, :].to(resid), resid[:, 1:, :]], dim=1)
                final = model(resid, start_at_layer=self.layer, stop_at_layer=model.cfg.n_layers,
                              past_kv_cache=self.prefix(g).for_rows(slots))
                logits = readout_logits(model, final[:, -1, :], self.answer_ids).float().cpu()
                out = out.index_put((torch.as_tensor(chunk),), logits)
        return out


# ------------------------------------------------------------------------------------------ training


def interchange(x: torch.Tensor, source: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
    """[m, d] x with its coordinates in span(plane) ([d, k], orthonormal columns) set to the source's."""
    return x + ((source - x) @ plane) @ plane.T


def sample_pairs(rng: np.random.Generator, infos: np.ndarray, base: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(source rows, counterfactual answers): for each base row a uniformly drawn row with another start value,
    and c' = (a_source + b_base) mod p."""
    a = infos[:, 0]
    sources = np.empty(len(base), dtype=np.int64)
    for index, row in enumerate(base):
        others = np.flatnonzero(a != a[row])
        if len(others) == 0:
            raise UserError("DAS needs prompts with at least two start values")
        sources[index] = others[rng.integers(len(others))]
    return sources, (a[sources] + infos[base, 1]) % p


@dataclass
class DasFit:
    """A learned subspace: W [d, k] (orthonormal columns), the loss per step and IIA on seeded training pairs."""

    plane: np.ndarray
    losses: np.ndarray
    train_iia: float


def train_das(data: InterchangeSet, k: int, settings: DasSettings, seed: int, progress: bool = False) -> DasFit:
    """Learn a k-dimensional interchange subspace on `data` at its current layer (seeded: init and batches)."""
    acts = data.start_acts()
    d = acts.shape[1]
    if k > d:
        raise UserError(f"DAS dimension {k} exceeds the residual width {d}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rotation = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(d, k, bias=False))
    optimizer = torch.optim.Adam(rotation.parameters(), lr=settings.lr)
    rng = np.random.default_rng(seed)
    sizes = np.array([len(rows) for rows in data.groups], dtype=float)
    losses = np.zeros(settings.steps)
    for step in tqdm(range(settings.steps), desc=f"DAS k={k}", unit="step", leave=False, disable=not progress):
        rows = data.groups[rng.choice(len(sizes), p=sizes / sizes.sum())]
        base = rng.choice(rows, size=min(settings.train_batch, len(rows)), replace=False)
        sources, targets = sample_pairs(rng, data.infos, base, data.p)
        plane = rotation.weight.T
        vectors = interchange(acts[torch.as_tensor(base)], acts[torch.as_tensor(sources)], plane)
        logits = data.answer_logits(torch.as_tensor(base), vectors)
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses[step] = float(loss.detach())
    plane = rotation.weight.detach().T.double()
    return DasFit(plane.numpy(), losses, training_iia(data, acts, plane.float(), settings.train_eval_pairs, seed))


@torch.no_grad()
def training_iia(data: InterchangeSet, acts: torch.Tensor, plane: torch.Tensor, n_pairs: int, seed: int) -> float:
    """IIA of a subspace on `n_pairs` seeded pairs of the data it was trained on (acts: its start-word activations)."""
    rng = np.random.default_rng([seed, 1])
    base = rng.integers(len(data.infos), size=n_pairs)
    sources, targets = sample_pairs(rng, data.infos, base, data.p)
    vectors = interchange(acts[torch.as_tensor(base)], acts[torch.as_tensor(sources)], plane)
    logits = data.answer_logits(torch.as_tensor(base), vectors)
    return float(np.mean(logits.argmax(1).numpy() == targets))


# ------------------------------------------------------------------------------------------ scoring


def patch_vectors(acts: torch.Tensor, runs: InterventionRuns, planes: dict[str, torch.Tensor],
                  basis: CircleBasis | None) -> dict[str, torch.Tensor]:
    """[R, d] patched start-word vectors of every patch on the runs: no-op, patch layer, each plane under the
    interchange rule (donor = source), and the paper's patch circle when `basis` is given."""
    x, donor = acts[torch.as_tensor(runs.problem)], acts[torch.as_tensor(runs.donor)]
    vectors = {"no_op": x, "patch_layer": donor}
    for name, plane in planes.items():
        vectors[name] = interchange(x, donor, plane.to(x))
    if basis is not None:
        vectors["patch_circle"] = variant_vectors("patch_circle", basis, x, donor, torch.as_tensor(runs.donor),
                                                  torch.as_tensor(runs.value)).to(x)
    return vectors


@torch.no_grad()
def patch_logits(data: InterchangeSet, runs: InterventionRuns, vectors: dict[str, torch.Tensor],
                 progress: bool = False) -> tuple[list[str], np.ndarray]:
    """(patch names, [patches, R, p] answer logits) of every patch on the runs."""
    rows = torch.as_tensor(runs.problem)
    names = list(vectors)
    logits = [data.answer_logits(rows, vectors[name]).numpy()
              for name in tqdm(names, desc="patches", unit="patch", leave=False, disable=not progress)]
    return names, np.stack(logits)


def sample_runs(runs: InterventionRuns, n: int, seed: int) -> InterventionRuns:
    """A seeded sample of n runs in their order (all of them when n is 0 or not below their number)."""
    if n == 0 or n >= len(runs):
        return runs
    keep = np.sort(np.random.default_rng([seed, 3]).choice(len(runs), size=n, replace=False))
    return InterventionRuns(runs.problem[keep], runs.value[keep], runs.new_answer[keep], runs.donor[keep])


def iia(logits: np.ndarray, runs: InterventionRuns) -> np.ndarray:
    """[...] share of runs whose arg-max answer word is the counterfactual c' (logits [..., R, p])."""
    return np.mean(logits.argmax(-1) == runs.new_answer, axis=-1)


def shares(logits: np.ndarray, names: Sequence[str], runs: InterventionRuns, infos: np.ndarray) -> np.ndarray:
    """[patches] each patch's share of patch layer's per-run effect on logit[c] - logit[c'] (NaN where patch
    layer changes nothing)."""
    answer = np.asarray(infos)[runs.problem, 2]
    metrics = np.stack([metric(torch.as_tensor(block), answer, runs.new_answer) for block in logits])
    noop = metrics[list(names).index("no_op")]
    layer_effect = metrics[list(names).index("patch_layer")] - noop
    return per_run_shares(metrics - noop, layer_effect[None, :])


def principal_angles_deg(plane: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between two subspaces given by [d, *] column bases."""
    return np.sort(np.degrees(subspace_angles(np.asarray(plane, float), np.asarray(other, float))))


def random_planes(basis: CircleBasis, layer: int, draws: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random 2-D planes of the residual stream (the controls' `patch_random` draws)."""
    return {f"random_{draw}": random_plane("patch_random", basis, draw_seed(seed, layer, "patch_random", draw))
            for draw in range(draws)}


@dataclass
class LayerDas:
    """DAS at one layer: the fits, and every patch's logits on the runs of each evaluation set."""

    layer: int
    fits: dict[int, DasFit]
    names: dict[str, list[str]]  # eval set -> patch names
    logits: dict[str, np.ndarray]  # eval set -> [patches, R, p]
    circle_plane: np.ndarray  # [d, 2]
    random: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [d, 2]
    n_train: int = 0  # training prompts

    def angles(self, k: int) -> np.ndarray:
        return principal_angles_deg(self.fits[k].plane, self.circle_plane)

    def random_angles(self) -> np.ndarray:
        """[draws, 2] principal angles of each random plane with the circle plane (the yardstick for `angles`)."""
        return np.array([principal_angles_deg(plane, self.circle_plane) for plane in self.random.values()]).reshape(-1, 2)


def run_layer_das(sets: dict[str, InterchangeSet], runs: InterventionRuns, basis: CircleBasis, layer: int,
                  settings: DasSettings, progress: bool = False) -> LayerDas:
    """Train DAS of every k on sets["train"] and score every patch on the other sets' runs at `layer`."""
    sets["train"].use_layer(layer)
    fits = {k: train_das(sets["train"], k, settings, seed=int(np.random.SeedSequence([settings.seed, layer, k])
                                                              .generate_state(1)[0]), progress=progress)
            for k in settings.dims}
    planes = {f"das_{k}": torch.as_tensor(fit.plane, dtype=torch.float32) for k, fit in fits.items()}
    planes["circle_plane"] = basis.plane.float().cpu()
    randoms = random_planes(basis, layer, settings.draws, settings.seed)
    planes.update({name: plane.float().cpu() for name, plane in randoms.items()})
    names, logits = {}, {}
    for name, data in sets.items():
        if name == "train":
            continue
        data.use_layer(layer)
        vectors = patch_vectors(data.start_acts(), runs, planes, basis if name == "paper" else None)
        names[name], logits[name] = patch_logits(data, runs, vectors, progress)
    return LayerDas(layer, fits, names, logits, basis.plane.double().cpu().numpy(),
                    {name: plane.double().cpu().numpy() for name, plane in randoms.items()}, len(sets["train"].infos))


def layer_summary(result: LayerDas, runs: InterventionRuns, infos: np.ndarray, p: int) -> dict[str, float]:
    """One layer's numbers: IIA and share of every patch on every evaluation set (random planes: mean and
    2.5th / 97.5th percentiles over the draws), DAS's training IIA and principal angles with the circle plane."""
    row: dict[str, float] = {"layer": result.layer, "chance_iia": 1.0 / p, "train_prompts": result.n_train}
    for set_name, names in result.names.items():
        accuracy = iia(result.logits[set_name], runs)
        share = shares(result.logits[set_name], names, runs, infos)
        random = [i for i, name in enumerate(names) if name.startswith("random_")]
        for i, name in enumerate(names):
            if not name.startswith("random_"):
                row[f"{set_name}_iia_{name}"] = float(accuracy[i])
                row[f"{set_name}_share_{name}"] = float(share[i])
        for stat, values in (("iia", accuracy[random]), ("share", share[random])):
            for label, value in zip(("mean", "lo", "hi"), draw_band(values)):
                row[f"{set_name}_{stat}_random_{label}"] = float(value)
    for k, fit in result.fits.items():
        angles = result.angles(k)
        row[f"train_iia_das_{k}"] = fit.train_iia
        row[f"angle_min_das_{k}"] = float(angles[0])
        row[f"angle_max_das_{k}"] = float(angles[-1])
    random_angles = result.random_angles()
    row["angle_min_random_mean"] = float(random_angles[:, 0].mean()) if len(random_angles) else float("nan")
    return row
