"""Which plane to patch: a fixed-layer probe, an SAE subspace, or each layer's own probe (upstream
`compare_circle_intervention_types.py`; the paper's rebuttal comparison).

All three use the "patch circle" formulas at the start-word token (letter a, cos+sin) over a few
layers; only the plane changes (`comparison_basis`). Each method's result is one stage, recomputed
when the cache, the SAE file or any setting changes.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from multid.tasks.cache import TaskCache
from multid.circles.engine import CleanRun, layer_metrics
from multid.circles.probe import VARIANTS, CircleBasis, fit_circle_probe, intervention_runs, target_table
from multid.circles.sweep import SweepParams, fit_layer_probe
from multid.config import figure_dir
from multid.errors import MissingArtifactError, UserError
from multid.io import load_npz, load_pt, save_figure, save_npz
from multid.stage import file_checksum
from multid.plotting import answer_colors, answer_legend_handles
from multid.stage import Stage, run_stage

METHODS = ("fixed_layer_probe", "sae_subspace", "per_layer_probe")
COMPARE_VERSION = 1
SAE_HINT = ("the SAE part of this repo is not implemented yet: pass a PCA file of SAE-cluster reconstructions with a "
            "'components' array [m, d] (.npz or .pt) as --sae_pca PATH, or run --methods fixed_layer_probe per_layer_probe")


def method_label(method: str, probe_layer: int) -> str:
    return {"fixed_layer_probe": f"Intervene with Layer {probe_layer} Probe", "sae_subspace": "Intervene with SAE Subspace",
            "per_layer_probe": "Intervene with Probe"}[method]


def read_sae_components(path: Path | None, pcs: Sequence[int]) -> np.ndarray:
    """The rows `pcs` [len(pcs), d] of the SAE PCA file's components, with the file and `pcs` checked (no model needed).

    The file: .npz or .pt with "components" [m, d_model] (rows = PCs, orthonormal), e.g. of the Mistral
    layer-8 weekday cluster's reconstructions. Upstream read a pickled sklearn PCA; pickles are not loaded here.
    """
    if path is None or not Path(path).is_file():
        raise MissingArtifactError("SAE subspace PCA file (--sae_pca)", path or "(no --sae_pca given)", advice=SAE_HINT)
    path = Path(path)
    if path.suffix not in (".npz", ".pt"):
        raise UserError(f"--sae_pca {path} must be a .npz or .pt file with a 'components' array [m, d]")
    stored = load_npz(path) if path.suffix == ".npz" else load_pt(path)
    if not isinstance(stored, dict) or "components" not in stored:
        raise UserError(f"{path} has no 'components' array; expected a .npz/.pt dict with components [m, d_model]")
    components = np.asarray(stored["components"], dtype=np.float64)
    if components.ndim != 2:
        raise UserError(f"{path}: components have shape {components.shape}, expected [m, d_model]")
    if min(pcs) < 0 or len(set(pcs)) != len(pcs):
        raise UserError(f"--sae_pcs {list(pcs)} must be distinct component indices >= 0")
    if max(pcs) >= components.shape[0]:
        raise UserError(f"--sae_pcs {list(pcs)} but {path} has only {components.shape[0]} components")
    return components[list(pcs)]


def load_sae_components(path: Path | None, pcs: Sequence[int], d_model: int) -> np.ndarray:
    """[len(pcs), d] orthonormal rows picked from the SAE PCA file (MissingArtifactError if absent)."""
    rows = read_sae_components(path, pcs)
    if rows.shape[1] != d_model:
        raise UserError(f"{path}: components have {rows.shape[1]} columns, expected d_model = {d_model} for this model")
    q, _ = np.linalg.qr(rows.T)  # orthonormalise (a no-op up to sign for PCA rows)
    return q.T


def sae_plane(cache: TaskCache, components: np.ndarray, probe_layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, R) of the cos/sin(a) probe fitted on the probe-layer activations projected on the SAE PCs
    (the circle-probe fit of docs/least_squares.md)."""
    acts = cache.get_acts(probe_layer, cache.layout.a_token).double().numpy()
    probe = fit_circle_probe((acts - acts.mean(axis=0)) @ components.T, cache.infos[:, 0], cache.p, ("cos", "sin"))
    return probe.q, probe.r


def comparison_basis(
    cache: TaskCache, method: str, layer: int, probe_layer: int, k: int, sae_components: np.ndarray | None,
    upstream_basis_pairing: bool = False, centered: bool = False, device="cpu",
) -> CircleBasis:
    """The intervention basis of one method at one target layer.

    fixed_layer_probe: the probe fitted at `probe_layer`, used at every layer, with the PCA basis of
        `probe_layer` (the plane keeps its direction in activation space). Upstream paired the probe's Q
        with the target layer's PCA basis, which only matches at probe_layer; `upstream_basis_pairing`
        reproduces that.
    sae_subspace: Q, R of the cos/sin(a) probe on the centred probe-layer activations projected on the SAE PCs.
    per_layer_probe: each layer's own probe (as the main sweep).
    The mean, PCA coordinates and donors always come from the target layer, as upstream.
    """
    params = SweepParams("a", ("cos", "sin"), k, null_permutations=1)
    target = cache.get_pca(layer, cache.layout.a_token, k)
    table = target_table(cache.p, ("cos", "sin"))
    if method == "fixed_layer_probe":
        probe = fit_layer_probe(cache, params, probe_layer)
        q, r = probe.q, probe.r
        undo = None if upstream_basis_pairing else probe.pca.components.T
    elif method == "sae_subspace":
        if sae_components is None:
            raise UserError("the sae_subspace method needs the SAE PCA components")
        q, r = sae_plane(cache, sae_components, probe_layer)
        undo = sae_components.T
    elif method == "per_layer_probe":
        probe = fit_layer_probe(cache, params, layer)
        q, r, undo = probe.q, probe.r, None
    else:
        raise UserError(f"unknown method {method!r}; choose from {METHODS}")
    return CircleBasis.from_arrays(q, r, table, target.mean, target.components, target.coords, undo=undo,
                                   centered=centered, device=device)


def comparison_dir(base_dir: Path, cache: TaskCache) -> Path:
    return figure_dir(base_dir, "circle_intervention_comparison", cache.model, cache.task)


def run_comparison(
    cache: TaskCache,
    base_dir: Path,
    load_model_fn: Callable[[], object],
    layers: Sequence[int] = (6, 7, 8, 9, 10),
    probe_layer: int = 8,
    k: int = 5,
    sae_path: Path | None = None,
    sae_pcs: Sequence[int] = (1, 2),
    methods: Sequence[str] = METHODS,
    upstream_basis_pairing: bool = False,
    centered: bool = False,
    batch_size: int = 64,
) -> dict[str, dict]:
    """Run every method at every layer; one npz per method (raw [L, 7, R], means), reused when inputs match."""
    bad = [layer for layer in [*layers, probe_layer] if not 0 <= layer < cache.n_cache_layers]
    if bad:
        raise UserError(f"layers {bad} are outside the cache layers 0..{cache.n_cache_layers - 1}")
    sae = load_sae_components(sae_path, sae_pcs, int(cache.meta["d_model"])) if "sae_subspace" in methods else None
    runs = intervention_runs(cache.infos, cache.p, "a")
    engine = CleanRun(cache, cache.layout.a_token, load_model_fn, batch_size)

    def compute(method: str, meta: dict, tmp: Path) -> None:
        raw = np.stack([
            layer_metrics(engine.model, cache, engine.prefix,
                          comparison_basis(cache, method, layer, probe_layer, k, sae, upstream_basis_pairing, centered,
                                           engine.device),
                          layer, runs, cache.answer_token_ids, engine.clean_logits, engine.rows_per_forward)
            for layer in layers
        ])
        save_npz(tmp, meta_json=np.array(json.dumps(meta, sort_keys=True)), layers=np.array(layers), raw=raw,
                 means=raw.mean(axis=2), variants=np.array(VARIANTS))

    out = {}
    for method in methods:
        # the SAE file's SHA-1 is in the settings, so a replaced file is recomputed
        meta = {"cache_id": cache.cache_id, "method": method, "layers": list(layers), "probe_layer": probe_layer, "pca_k": k,
                "sae_sha1": file_checksum(sae_path) if method == "sae_subspace" else None, "sae_pcs": list(sae_pcs),
                "upstream_basis_pairing": upstream_basis_pairing, "centered": centered, "version": COMPARE_VERSION}
        stage = Stage(f"{method} comparison of {cache.model} / {cache.task}", comparison_dir(base_dir, cache) / f"{method}.npz",
                      {**meta, "cache": cache.artifact_id})
        path = run_stage(stage, partial(compute, method, meta))
        stored = load_npz(path)
        out[method] = {"path": path, "layers": stored["layers"], "raw": stored["raw"], "means": stored["means"], "meta": meta}
    return out


def plot_comparison(results: dict[str, dict], probe_layer: int, out_path: Path) -> Path:
    """Mean and 96% t-interval of the patch-circle logit difference vs layer, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multid.paper import FIGURE5_CONFIDENCE
    from multid.stats import t_interval

    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    for method, result in results.items():
        mean, half = t_interval(result["raw"][:, VARIANTS.index("patch_circle"), :], FIGURE5_CONFIDENCE)
        ax.plot(result["layers"], mean, marker="o", markersize=3, label=method_label(method, probe_layer))
        ax.fill_between(result["layers"], mean - half, mean + half, alpha=0.2, linewidth=0)
    ax.set_xlabel("Layer")
    ax.set_ylabel("Logit difference after patch circle")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=200, close=True)
    return out_path


def plot_sae_projections(cache: TaskCache, components: np.ndarray, probe_layer: int, out_path: Path) -> Path:
    """Probe-layer start-word activations projected on the two SAE PCs, coloured by the start word."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = cache.get_acts(probe_layer, cache.layout.a_token).double().numpy()
    coords = (acts - acts.mean(axis=0)) @ components.T
    colors = answer_colors(cache.p)
    fig, ax = plt.subplots(figsize=(3.4, 3.2))
    ax.scatter(coords[:, 0], coords[:, 1], c=colors[cache.infos[:, 0]], s=14)
    ax.legend(handles=answer_legend_handles(cache.meta["answer_words"]), fontsize=6)
    ax.set_xlabel("SAE PC a")
    ax.set_ylabel("SAE PC b")
    fig.tight_layout()
    save_figure(fig, out_path, dpi=200, close=True)
    return out_path
