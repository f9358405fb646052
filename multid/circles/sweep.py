"""The circle probe + intervention sweep over layers (upstream `circle_probe_interventions.py`; paper section 5.2).

Per layer: fit the probe of the chosen letter on the PCA-k coordinates (with a relabel null), then run
the seven interventions batched (`multid.circles.engine`). Every probe file and every finished layer is
its own stage (`multid.stage`), so an interrupted sweep resumes where it stopped and ends with the same
combined file; `run_circle_sweep` lists the artifacts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from multid.tasks.cache import PcaFit, TaskCache, prompt_tokens
from multid.circles import controls as ctl
from multid.circles.engine import CleanRun, layer_metrics, rows_per_forward  # noqa: F401 (rows_per_forward re-exported)
from multid.circles.probe import (
    VARIANT_LABELS,
    VARIANTS,
    CircleBasis,
    check_target_names,
    find_c_circle,
    fit_circle_probe,
    intervention_runs,
    relabel_null,
)
from multid.tasks.registry import ALIASES
from multid.config import figure_dir
from multid.errors import MissingArtifactError, UserError
from multid.io import load_npz, load_pt, save_csv, save_figure, save_npz, save_pt
from multid.stage import Stage, damage, is_current, read_record, run_stage

SWEEP_VERSION = 1
LETTER_INFO_INDEX = {"a": 0, "c": 2}
DEFAULT_NULL_PERMUTATIONS = 100
PROBLEM_TYPES = ("day", "month")  # upstream's problem_type words; `multid.tasks.registry.ALIASES` maps them to tasks


def problem_type(task: str) -> str:
    """Upstream's problem_type word of a task: "day" for days_of_week, "month" for months_of_year."""
    return next(word for word in PROBLEM_TYPES if ALIASES[word] == task)


@dataclass(frozen=True)
class SweepParams:
    """Everything that defines one sweep's numbers (besides the cache).

    The relabel null refits the probe with the p label values permuted (mean and 95th percentile over
    `null_permutations` seeded permutations); upstream has no such control, and with 7 classes and 5
    coordinates a 2-target fit is high for almost any labelling. Our file names carry k (upstream's did not).
    """

    letter: str  # "a" or "c"
    targets: tuple[str, ...] = ("cos", "sin")
    pca_k: int = 5
    inverse_regression: bool = False
    centered: bool = False  # centred "patch circle" / "patch PCA" formulas instead of upstream's
    upstream_one_hot_8: bool = False  # find_c_circle with upstream's 8 indicators instead of p
    null_permutations: int = DEFAULT_NULL_PERMUTATIONS
    seed: int = 0

    @property
    def ext(self) -> str:
        return "_".join(self.targets)

    @property
    def probe_suffix(self) -> str:
        suffix = "_regression_circle" if self.inverse_regression else ""
        return suffix + ("_onehot8" if self.inverse_regression and self.upstream_one_hot_8 else "")

    def stem(self, token: int) -> str:
        return f"{self.letter}_{self.ext}_token_{token}_pca_{self.pca_k}{self.probe_suffix}" + ("_centered" if self.centered else "")

    def to_json(self) -> dict:
        data = asdict(self)
        data["targets"] = list(self.targets)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "SweepParams":
        """The parameters stored by `to_json`."""
        return cls(**{**data, "targets": tuple(data["targets"])})

    def plane_json(self) -> dict:
        """The parameters that define the probe plane (Q, R, E): not the null or the intervention formula."""
        return {"letter": self.letter, "targets": list(self.targets), "pca_k": self.pca_k,
                "inverse_regression": self.inverse_regression,
                "upstream_one_hot_8": self.upstream_one_hot_8 if self.inverse_regression else False}


def default_pca_k(inverse_regression: bool) -> int:
    """Upstream default: 20 with the inverse-regression probe, else 5."""
    return 20 if inverse_regression else 5


def check_params(params: SweepParams, cache: TaskCache | None = None) -> SweepParams:
    """Validate a parameter set (and, given a cache, k against its size); raise one-line UserErrors."""
    if params.letter not in LETTER_INFO_INDEX:
        raise UserError(f"intervene_on must be a or c, got {params.letter!r}")
    check_target_names(params.targets)
    if params.inverse_regression and params.letter != "c":
        raise UserError("--use_inverse_regression_probe finds the c circle; use it with intervene_on c, not a")
    if params.inverse_regression and tuple(params.targets) != ("cos", "sin"):
        raise UserError(
            f"--use_inverse_regression_probe gives a 2-D (cos, sin) plane; use --probe_on_cos --probe_on_sin, not {params.ext}"
        )
    if params.null_permutations < 1:
        raise UserError(f"--null_permutations must be >= 1, got {params.null_permutations}")
    limit = min(cache.infos.shape[0], int(cache.meta["d_model"])) if cache is not None else None
    if params.pca_k < len(params.targets) or (limit is not None and params.pca_k > limit):
        raise UserError(f"--intervention_pca_k {params.pca_k} must be between {len(params.targets)} and {limit or 'n_problems'}")
    return params


def letter_token(cache: TaskCache, letter: str) -> int:
    """Position of the intervention: the start word for a, the last prompt token for c."""
    return cache.layout.a_token if letter == "a" else cache.layout.before_c_token


def sweep_layers(cache: TaskCache, letter: str) -> list[int]:
    """Upstream's layer range: cache layers 0..n for a, 1..n for c (layer 0 of the last token is constant)."""
    return list(range(0 if letter == "a" else 1, cache.n_cache_layers))


def check_layers(layers: Sequence[int] | None, cache: TaskCache, letter: str) -> list[int]:
    allowed = sweep_layers(cache, letter)
    if layers is None:
        return allowed
    bad = [layer for layer in layers if layer not in allowed]
    if bad:
        raise UserError(f"--layers {bad} out of range for letter {letter}: allowed {allowed[0]}..{allowed[-1]}")
    return sorted(set(int(layer) for layer in layers))


# ------------------------------------------------------------------------------------------ paths


def rotation_dir(base_dir: Path, cache: TaskCache) -> Path:
    return figure_dir(base_dir, "rotation_probing", cache.model, cache.task)


def probe_path(cache: TaskCache, params: SweepParams, layer: int) -> Path:
    token = letter_token(cache, params.letter)
    name = f"{params.ext}_layer_{layer}_token_{token}_pca_{params.pca_k}{params.probe_suffix}.pt"
    return cache.folder / f"circle_probes_{params.letter}" / name


def layer_result_path(base_dir: Path, cache: TaskCache, params: SweepParams, layer: int) -> Path:
    return rotation_dir(base_dir, cache) / params.stem(letter_token(cache, params.letter)) / f"layer_{layer}.npz"


def combined_path(base_dir: Path, cache: TaskCache, params: SweepParams, suffix: str = "_all_layers.npz") -> Path:
    return rotation_dir(base_dir, cache) / (params.stem(letter_token(cache, params.letter)) + suffix)


def sweep_base_dir(combined: Path) -> Path:
    """The base dir a combined sweep file lies under (the inverse of `combined_path`)."""
    return Path(combined).parents[3]


def sweep_command(
    model: str, task: str, params: SweepParams, layers: Sequence[int] | None = None, base_dir: Path | None = None
) -> str:
    """The command line that makes this sweep's artifacts (for error messages)."""
    flags = " ".join(f"--probe_on_{name}" for name in params.targets)
    parts = [f"python3 intervention/circle_probe_interventions.py {problem_type(task)} {params.letter} {model}",
             f"--intervention_pca_k {params.pca_k} {flags}"]
    if params.inverse_regression:
        parts.append("--use_inverse_regression_probe")
    if params.inverse_regression and params.upstream_one_hot_8:
        parts.append("--upstream_one_hot_8")
    if params.centered:
        parts.append("--centered_interventions")
    if params.null_permutations != DEFAULT_NULL_PERMUTATIONS:
        parts.append(f"--null_permutations {params.null_permutations}")
    if params.seed != 0:
        parts.append(f"--seed {params.seed}")
    if layers:
        parts.append("--layers " + " ".join(str(layer) for layer in layers))
    if base_dir is not None:
        parts.append(f"--base_dir {base_dir}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ probes


@dataclass(frozen=True)
class LayerProbe:
    """The probe of one layer and the plane the interventions use."""

    layer: int
    token: int
    pca: PcaFit
    q: np.ndarray  # [k, D] intervention plane in PCA coordinates (probe QR, or find_c_circle QR)
    r: np.ndarray  # [D, D]
    target_to_embedding: np.ndarray  # [p, D]
    weights: np.ndarray  # [k, D] least-squares probe
    r2: np.ndarray  # [D] per-target R^2 of the least-squares probe
    mae: np.ndarray  # [D]
    null_mean: float  # relabel null of the mean R^2
    null_p95: float
    c_circle_r2: tuple[float, float] = (float("nan"), float("nan"))  # find_c_circle (before, after)

    @property
    def mean_r2(self) -> float:
        return float(np.mean(self.r2))

    def basis(self, centered: bool = False, device: str | torch.device = "cpu") -> CircleBasis:
        return CircleBasis.from_arrays(
            self.q, self.r, self.target_to_embedding, self.pca.mean, self.pca.components, self.pca.coords,
            centered=centered, device=device,
        )


def fit_layer_probe(cache: TaskCache, params: SweepParams, layer: int) -> LayerProbe:
    """Fit the probe (and the inverse-regression plane) at one layer; no model needed.

    The probe and the inverse regression are two of the project's five least-squares fits
    (docs/least_squares.md says how and why they differ).
    """
    token = letter_token(cache, params.letter)
    pca = cache.get_pca(layer, token, params.pca_k)
    labels = cache.infos[:, LETTER_INFO_INDEX[params.letter]]
    probe = fit_circle_probe(pca.coords, labels, cache.p, params.targets)
    null_mean, null_p95 = relabel_null(pca.coords, labels, cache.p, params.targets, params.null_permutations, params.seed)
    q, r, c_r2 = probe.q, probe.r, (float("nan"), float("nan"))
    if params.inverse_regression:
        fit = find_c_circle(cache.infos, pca.coords, cache.p, params.upstream_one_hot_8)
        q, r = np.linalg.qr(fit.readout)
        c_r2 = (fit.r2_before, fit.r2_after)
    return LayerProbe(layer, token, pca, q, r, probe.target_to_embedding, probe.weights, probe.r2, probe.mae,
                      null_mean, null_p95, c_r2)


def probe_stage(cache: TaskCache, params: SweepParams, layer: int, base_dir: Path | None = None) -> Stage:
    """The probe file of one layer as a stage derived from the cache."""
    return Stage(f"layer-{layer} {params.letter}-probe of {cache.model} / {cache.task}", probe_path(cache, params, layer),
                 {**probe_meta(cache, params, layer), "cache": cache.artifact_id},
                 command=sweep_command(cache.model, cache.task, params, [layer], base_dir))


def probe_meta(cache: TaskCache, params: SweepParams, layer: int) -> dict:
    """What a probe file was made from; "null" only affects its stored null, not the plane."""
    return {"cache_id": cache.cache_id, "model": cache.model, "task": cache.task, "layer": layer,
            "token": letter_token(cache, params.letter), "plane": params.plane_json(), "version": SWEEP_VERSION,
            "null": {"permutations": params.null_permutations, "seed": params.seed}}


def same_plane(stored_meta: dict, wanted: dict) -> bool:
    strip = lambda meta: {key: value for key, value in meta.items() if key != "null"}  # noqa: E731
    return strip(stored_meta or {}) == strip(wanted)


def save_probe(path: Path, probe: LayerProbe, meta: dict) -> Path:
    """Probe as a dict of tensors (upstream keys layer, token, pca_k, probe_q, probe_r, target_to_embedding, plus ours)."""
    as_tensor = lambda array: torch.as_tensor(np.asarray(array, dtype=np.float64))  # noqa: E731
    return save_pt(path, {
        "layer": probe.layer,
        "token": probe.token,
        "pca_k": int(probe.q.shape[0]),
        "probe_q": as_tensor(probe.q),
        "probe_r": as_tensor(probe.r),
        "target_to_embedding": as_tensor(probe.target_to_embedding),
        "weights": as_tensor(probe.weights),
        "r2": as_tensor(probe.r2),
        "mae": as_tensor(probe.mae),
        "null_mean": float(probe.null_mean),
        "null_p95": float(probe.null_p95),
        "c_circle_r2": [float(value) for value in probe.c_circle_r2],
        "meta": meta,
    })


def load_probe(cache: TaskCache, params: SweepParams, layer: int, base_dir: Path | None = None) -> dict:
    """A saved probe of this cache and plane (any null), or an error naming the command that makes it."""
    stage = probe_stage(cache, params, layer, base_dir)
    path, command = stage.path, stage.command
    if not path.exists():
        raise MissingArtifactError(f"layer-{layer} {params.letter}-probe", path, command)
    problem = damage(path, is_dir=False)
    if problem is not None:
        raise UserError(f"the probe {path} is damaged or unrecorded ({problem}); remake it with: {command}")
    if not same_plane(read_record(path, False)["settings"], stage.settings):
        raise UserError(f"the probe {path} was made from another cache or with other parameters; remake it with: {command}")
    return load_pt(path)


def probe_plane_from_file(stored: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Q, R, E) of a saved probe as float64 arrays."""
    return tuple(stored[key].numpy() for key in ("probe_q", "probe_r", "target_to_embedding"))


# ------------------------------------------------------------------------------------------ results


@dataclass
class SweepResult:
    """Finished layers of one sweep, stacked in layer order."""

    layers: np.ndarray  # [L]
    means: np.ndarray  # [L, 7] in VARIANTS order
    raw: np.ndarray  # [L, 7, R]
    r2: np.ndarray  # [L, D] per-target probe R^2
    null_mean: np.ndarray  # [L]
    null_p95: np.ndarray  # [L]
    c_circle_r2: np.ndarray  # [L, 2] (nan unless inverse regression)
    problem: np.ndarray  # [R] run -> problem index
    value: np.ndarray  # [R]
    new_answer: np.ndarray  # [R]
    donor: np.ndarray  # [R]
    meta: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    controls: ctl.ControlResult | None = None  # random-subspace controls, when the sweep ran them

    def variant_means(self, variant: str) -> np.ndarray:
        return self.means[:, VARIANTS.index(variant)]

    def recovery(self, variant: str) -> np.ndarray:
        """Fraction of the mean patch-layer effect (relative to no-op) that `variant` reproduces, per layer.

        A ratio of means: unstable when the patch-layer mean effect is near zero (e.g. a model that
        does not do the arithmetic); see `per_run_recovery` for a per-run measure.
        """
        noop = self.variant_means("no_op")
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.variant_means(variant) - noop) / (self.variant_means("patch_layer") - noop)

    def per_run_recovery(self, variant: str) -> tuple[np.ndarray, np.ndarray]:
        """(slope, correlation) per layer of the per-run effect of `variant` on the per-run patch-layer effect.

        Effects are changes of the metric against no-op in the same run. The slope <d_v, d_layer> /
        <d_layer, d_layer> is the share of the patch-layer change that `variant` reproduces run by run; both are
        NaN where patch layer changes nothing (RMS below `multid.circles.controls.MIN_LAYER_EFFECT`).
        """
        noop = self.raw[:, VARIANTS.index("no_op"), :]
        effect = self.raw[:, VARIANTS.index(variant), :] - noop
        layer_effect = self.raw[:, VARIANTS.index("patch_layer"), :] - noop
        slope = ctl.per_run_shares(effect, layer_effect)  # NaN where patch layer changes nothing (0/0)
        with np.errstate(divide="ignore", invalid="ignore"):
            centred = lambda x: x - x.mean(axis=1, keepdims=True)  # noqa: E731
            corr = np.sum(centred(effect) * centred(layer_effect), axis=1) / np.sqrt(
                np.sum(centred(effect) ** 2, axis=1) * np.sum(centred(layer_effect) ** 2, axis=1))
        return slope, np.where(np.isnan(slope), np.nan, corr)


def sweep_meta(cache: TaskCache, params: SweepParams) -> dict:
    return {"cache_id": cache.cache_id, "model": cache.model, "task": cache.task, "p": cache.p,
            "token": letter_token(cache, params.letter), "answer_token_ids": cache.answer_token_ids,
            "params": params.to_json(), "variants": list(VARIANTS), "version": SWEEP_VERSION}


def meta_array(meta: dict) -> np.ndarray:
    return np.array(json.dumps(meta, sort_keys=True))


def read_meta(stored: dict) -> dict:
    return json.loads(str(stored["meta_json"])) if "meta_json" in stored else {}


def save_layer_result(path: Path, meta: dict, layer: int, raw: np.ndarray, probe: LayerProbe, runs) -> Path:
    return save_npz(
        path,
        meta_json=meta_array(meta),
        layer=np.int64(layer),
        means=raw.mean(axis=1),
        raw=raw,
        r2=np.asarray(probe.r2, dtype=np.float64),
        null_mean=np.float64(probe.null_mean),
        null_p95=np.float64(probe.null_p95),
        c_circle_r2=np.asarray(probe.c_circle_r2, dtype=np.float64),
        problem=runs.problem,
        value=runs.value,
        new_answer=runs.new_answer,
        donor=runs.donor,
    )


def layer_stage(base_dir: Path, cache: TaskCache, params: SweepParams, layer: int) -> Stage:
    """One finished layer of a sweep as a stage (settings: the sweep meta, the layer, the cache's identity)."""
    return Stage(f"{params.letter}-sweep layer {layer} of {cache.model} / {cache.task}",
                 layer_result_path(base_dir, cache, params, layer),
                 {**sweep_meta(cache, params), "layer": layer, "cache": cache.artifact_id},
                 command=sweep_command(cache.model, cache.task, params, [layer], base_dir))


def combine_layers(stored_layers: list[dict], meta: dict) -> SweepResult:
    """Stack per-layer results (sorted by layer)."""
    stored_layers = sorted(stored_layers, key=lambda item: int(item["layer"]))
    first = stored_layers[0] if stored_layers else None
    stack = lambda key: np.stack([item[key] for item in stored_layers])  # noqa: E731
    runs = {key: (first[key] if first else np.zeros(0, np.int64)) for key in ("problem", "value", "new_answer", "donor")}
    if not stored_layers:
        empty = np.zeros((0, len(VARIANTS)))
        return SweepResult(np.zeros(0, np.int64), empty, np.zeros((0, len(VARIANTS), 0)), np.zeros((0, 0)),
                           np.zeros(0), np.zeros(0), np.zeros((0, 2)), **runs, meta=meta)
    return SweepResult(stack("layer").astype(np.int64), stack("means"), stack("raw"), stack("r2"), stack("null_mean"),
                       stack("null_p95"), stack("c_circle_r2"), **runs, meta=meta)


def save_combined(path: Path, result: SweepResult) -> Path:
    return save_npz(
        path,
        meta_json=meta_array(result.meta),
        variants=np.array(VARIANTS),
        layers=result.layers,
        means=result.means,
        raw=result.raw,
        r2=result.r2,
        null_mean=result.null_mean,
        null_p95=result.null_p95,
        c_circle_r2=result.c_circle_r2,
        problem=result.problem,
        value=result.value,
        new_answer=result.new_answer,
        donor=result.donor,
    )


def load_sweep_result(path: Path) -> SweepResult:
    """Read a combined `<stem>_all_layers.npz`."""
    stored = load_npz(path)
    variants = tuple(str(name) for name in stored["variants"])
    if variants != VARIANTS:
        raise UserError(f"{path} lists variants {variants}, expected {VARIANTS}; rerun the sweep")
    return SweepResult(
        stored["layers"], stored["means"], stored["raw"], stored["r2"], stored["null_mean"], stored["null_p95"],
        stored["c_circle_r2"], stored["problem"], stored["value"], stored["new_answer"], stored["donor"],
        meta=read_meta(stored), paths={"combined": Path(path)},
    )


def load_current_sweep(base_dir: Path, model: str, task: str, path: Path) -> SweepResult:
    """A combined sweep file of `model` / `task`, checked to come from the current cache under `base_dir`.

    A file made from another cache (e.g. one rebuilt since with other --answer_tokens) raises a
    UserError naming the command that recomputes it.
    """
    cache = TaskCache.open(base_dir, model, task)
    result = load_sweep_result(path)
    if result.meta.get("cache_id") != cache.cache_id or result.meta.get("task") != task:
        params = SweepParams.from_json(result.meta["params"]) if "params" in result.meta else SweepParams("a")
        all_layers = list(result.layers) == sweep_layers(cache, params.letter)
        command = sweep_command(model, task, params, None if all_layers else list(result.layers), base_dir)
        raise UserError(f"{path} was computed from an older activation cache of {model} / {task}; recompute it with: {command}")
    return result


RECOVERY_VARIANTS = ("patch_circle", "average_ablate")
SUMMARY_COLUMNS = ("layer", *(f"mean_{name}" for name in VARIANTS), "probe_r2", "null_mean", "null_p95",
                   "c_circle_r2_before", "c_circle_r2_after",
                   *(f"{name}_recovery" for name in RECOVERY_VARIANTS),
                   *(f"{name}_per_run_{kind}" for name in RECOVERY_VARIANTS for kind in ("slope", "r")))


def summary_rows(result: SweepResult) -> list[tuple]:
    """One row per layer: the seven means, probe R^2 and its null, and how much of patch layer's effect
    patch circle and average ablate reproduce (ratio of means; per-run slope and correlation)."""
    ratios = [result.recovery(name) for name in RECOVERY_VARIANTS]
    per_run = [array for name in RECOVERY_VARIANTS for array in result.per_run_recovery(name)]
    rows = []
    for index, layer in enumerate(result.layers):
        numbers = [*result.means[index], float(np.mean(result.r2[index])), result.null_mean[index], result.null_p95[index],
                   *result.c_circle_r2[index], *(ratio[index] for ratio in ratios), *(array[index] for array in per_run)]
        rows.append((int(layer), *(f"{value:.6g}" for value in numbers)))
    return rows


# ------------------------------------------------------------------------------------------ the sweep


def run_circle_sweep(
    cache: TaskCache,
    params: SweepParams,
    base_dir: Path,
    layers: Sequence[int] | None = None,
    load_model_fn: Callable[[], object] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    make_figures: bool = True,
    controls: int = 0,
    control_layers: Sequence[int] | None = None,
) -> SweepResult:
    """Probe + seven interventions at each layer; resumable. Writes (stem = `params.stem(token)`):

        <base_dir>/<model>_<task>/circle_probes_<letter>/<ext>_layer_<L>_token_<T>_pca_<k><suffix>.pt
        <base_dir>/figs/<model>_<task>/rotation_probing/<stem>/layer_<L>.npz     one per finished layer
        <base_dir>/figs/<model>_<task>/rotation_probing/<stem>_all_layers.npz    all finished layers
        <base_dir>/figs/<model>_<task>/rotation_probing/<stem>_summary.csv       means, R^2, null, recovery
        <base_dir>/figs/<model>_<task>/rotation_probing/<stem>_logit_diffs.png   and <stem>_probe_r2.png

    `load_model_fn()` is called once, and only if some layer still has to be computed. The returned
    result (and the combined file) holds every finished layer of this cache and parameter set, also
    ones from earlier runs that are not in `layers`.

    controls = K > 0 also runs K seeded random-subspace patches of each kind per layer (`multid.circles.controls`,
    seeded by params.seed) at each of `layers` also in `control_layers` (default: all), each layer's its own
    stage, and writes <stem>_controls.npz / .csv / .png; `result.controls` holds them.
    """
    check_params(params, cache)
    layers = check_layers(layers, cache, params.letter)
    meta = sweep_meta(cache, params)
    runs = intervention_runs(cache.infos, cache.p, params.letter)
    engine = CleanRun(cache, letter_token(cache, params.letter), load_model_fn, batch_size)

    timings: dict[int, float] = {}

    def compute_layer(layer: int, probe: LayerProbe, tmp: Path) -> None:
        started = time.time()
        basis = probe.basis(params.centered, device=engine.device)
        raw = layer_metrics(engine.model, cache, engine.prefix, basis, layer, runs, cache.answer_token_ids,
                            engine.clean_logits, engine.rows_per_forward)
        save_layer_result(tmp, {**meta, "layer": layer}, layer, raw, probe, runs)
        timings[layer] = time.time() - started

    def compute_controls(layer: int, probe: LayerProbe, tmp: Path) -> None:
        basis = probe.basis(params.centered, device=engine.device)
        circle, raw = ctl.layer_control_metrics(engine, cache, basis, layer, runs, params.letter, controls, params.seed)
        save_npz(tmp, meta_json=meta_array({**meta, "layer": layer, "controls": controls_settings(controls, params.seed)}),
                 layer=np.int64(layer), circle=circle, raw=raw)

    for layer in tqdm(layers, desc=f"{cache.model} {cache.task} {params.letter}-circle layers", unit="layer", disable=not progress):
        probe = fit_layer_probe(cache, params, layer)
        run_stage(probe_stage(cache, params, layer, base_dir), partial(save_probe, probe=probe, meta=probe_meta(cache, params, layer)))
        run_stage(layer_stage(base_dir, cache, params, layer), partial(compute_layer, layer, probe))
        if controls and (control_layers is None or layer in control_layers):
            run_stage(controls_stage(base_dir, cache, params, layer, controls), partial(compute_controls, layer, probe))
    result = collect_finished_layers(base_dir, cache, params)
    result.paths["combined"] = save_combined(combined_path(base_dir, cache, params), result)
    result.paths["summary"] = save_csv(combined_path(base_dir, cache, params, "_summary.csv"), SUMMARY_COLUMNS, summary_rows(result))
    result.paths["probes"] = probe_path(cache, params, layers[0]).parent if layers else None
    if make_figures and len(result.layers):
        result.paths["logit_diffs_figure"] = plot_sweep_means(result, combined_path(base_dir, cache, params, "_logit_diffs.png"))
        result.paths["probe_r2_figure"] = plot_probe_r2(result, combined_path(base_dir, cache, params, "_probe_r2.png"))
    if controls:
        result.controls = collect_controls(base_dir, cache, params, result, controls)
        result.paths.update(write_controls(base_dir, cache, params, result.controls, make_figures))
    result.meta = {**result.meta, "timings_s": {str(k): round(v, 2) for k, v in timings.items()}, "setup_s": engine.setup_s}
    return result


def collect_finished_layers(base_dir: Path, cache: TaskCache, params: SweepParams) -> SweepResult:
    """Every finished layer file of this cache and parameter set (stale or damaged ones are left out)."""
    meta = sweep_meta(cache, params)
    folder = layer_result_path(base_dir, cache, params, 0).parent
    stored = []
    for path in sorted(folder.glob("layer_*.npz")) if folder.exists() else []:
        stage = layer_stage(base_dir, cache, params, int(path.stem.split("_")[1]))
        if is_current(stage):
            stored.append(load_npz(path))
    return combine_layers(stored, meta)


# ------------------------------------------------------------------------------------------ controls


def controls_path(base_dir: Path, cache: TaskCache, params: SweepParams, layer: int) -> Path:
    return layer_result_path(base_dir, cache, params, layer).with_name(f"controls_layer_{layer}.npz")


def controls_settings(draws: int, seed: int) -> dict:
    return {"draws": int(draws), "seed": int(seed), "kinds": list(ctl.CONTROL_KINDS), "version": ctl.CONTROLS_VERSION}


def controls_stage(base_dir: Path, cache: TaskCache, params: SweepParams, layer: int, draws: int) -> Stage:
    """The random-subspace controls of one layer (`multid.circles.controls`) as a stage beside the layer's file."""
    command = sweep_command(cache.model, cache.task, params, [layer], base_dir) + f" --controls {draws}"
    return Stage(f"{params.letter}-sweep controls of layer {layer} of {cache.model} / {cache.task}",
                 controls_path(base_dir, cache, params, layer),
                 {**sweep_meta(cache, params), "layer": layer, "cache": cache.artifact_id,
                  "controls": controls_settings(draws, params.seed)}, command=command)


def collect_controls(base_dir: Path, cache: TaskCache, params: SweepParams, result: SweepResult, draws: int
                     ) -> ctl.ControlResult:
    """The controls of every finished sweep layer that has current ones, beside the sweep's raw metrics."""
    runs = intervention_runs(cache.infos, cache.p, params.letter)
    keep, circle, raw = [], [], []
    for index, layer in enumerate(result.layers):
        stage = controls_stage(base_dir, cache, params, int(layer), draws)
        if is_current(stage):
            stored = load_npz(stage.path)
            keep.append(index)
            circle.append(stored["circle"])
            raw.append(stored["raw"])
    runs_count = len(runs)
    return ctl.ControlResult(
        layers=result.layers[keep],
        circle=np.stack(circle) if circle else np.zeros((0, runs_count)),
        raw=np.stack(raw) if raw else np.zeros((0, len(ctl.CONTROL_KINDS), draws, runs_count)),
        sweep_raw=result.raw[keep], floor=ctl.chance_floor(cache.infos, runs),
        meta={**result.meta, "controls": controls_settings(draws, params.seed)})


def write_controls(base_dir: Path, cache: TaskCache, params: SweepParams, controls: ctl.ControlResult,
                   make_figures: bool) -> dict:
    """<stem>_controls.npz (raw metrics), <stem>_controls.csv (shares per layer) and the control figure."""
    paths = {"controls": save_npz(combined_path(base_dir, cache, params, "_controls.npz"),
                                  meta_json=meta_array(controls.meta), layers=controls.layers, circle=controls.circle,
                                  raw=controls.raw, kinds=np.array(ctl.CONTROL_KINDS), floor=np.float64(controls.floor)),
             "controls_summary": save_csv(combined_path(base_dir, cache, params, "_controls.csv"), ctl.SUMMARY_COLUMNS,
                                          ctl.summary_rows(controls))}
    if make_figures and len(controls.layers):
        title = (f"{cache.model} {cache.task}: patches of the {params.letter} token against random 2-D subspaces "
                 f"({controls.raw.shape[2]} draws)")
        paths["controls_figure"] = ctl.plot_controls(controls, combined_path(base_dir, cache, params, "_controls.png"),
                                                     title)
    return paths


# ------------------------------------------------------------------------------------------ figures


def plot_sweep_means(result: SweepResult, out_path: Path) -> Path:
    """The seven variant means of logit[c] - logit[c'] vs layer (upstream's per-sweep figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for index, variant in enumerate(VARIANTS):
        ax.plot(result.layers, result.means[:, index], marker="o", markersize=3, label=VARIANT_LABELS[variant])
    ax.axhline(0, color="0.6", linewidth=0.8)
    params = result.meta.get("params", {})
    ax.set_title(f"{result.meta.get('model')} {result.meta.get('task')}: intervene on {params.get('letter')} "
                 f"({'_'.join(params.get('targets', []))}, k={params.get('pca_k')})", fontsize=9)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("mean logit[c] - logit[c']")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=150, close=True)
    return out_path


def plot_probe_r2(result: SweepResult, out_path: Path) -> Path:
    """Probe R^2 vs layer (per target and mean) with the relabel null (mean line, band up to the 95th percentile)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    params = result.meta.get("params", {})
    targets = params.get("targets", [])
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for index, name in enumerate(targets):
        ax.plot(result.layers, result.r2[:, index], linewidth=0.8, alpha=0.6, label=f"R$^2$ {name}")
    ax.plot(result.layers, result.r2.mean(axis=1), color="black", marker="o", markersize=3, label="R$^2$ mean")
    ax.fill_between(result.layers, 0, result.null_p95, color="tab:red", alpha=0.15, label="relabel null (up to 95th pct)")
    ax.plot(result.layers, result.null_mean, color="tab:red", linestyle="--", label="relabel null mean")
    if np.isfinite(result.c_circle_r2).any():
        ax.plot(result.layers, result.c_circle_r2[:, 1], color="tab:purple", label="find_c_circle R$^2$ (after)")
    ax.set_ylim(min(0.0, float(np.nanmin(result.r2))), 1.02)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("R$^2$")
    ax.set_title(f"{result.meta.get('model')} {result.meta.get('task')}: probe of {params.get('letter')} "
                 f"(PCA-{params.get('pca_k')}, {params.get('null_permutations')} relabellings)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=150, close=True)
    return out_path
