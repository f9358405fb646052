"""The layer of make discover's SAE, chosen by a criterion measured on the corpus (issue 33): the weekday and month
circles in the residuals of the corpus's own calendar tokens at every layer (multid.sae.analysis.layer_profile),
a table, a figure, and the layer the criterion picks. A stage: <base_dir>/sae/<model>_<corpus>_layer_profile.json
(with its .png), rebuilt when the corpus, the model or the sample changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from multid.io import load_json, save_figure, save_json
from multid.sae.analysis import layer_profile as LP
from multid.sae.analysis.sae_trainer import cache_contexts
from multid.sae.data.calendar_tokens import LABELS_VERSION, TokenClasses, token_classes
from multid.sae.data.text_sources import make_text_source
from multid.sae.data.tokenizers import load_tokenizer
from multid.stage import Stage, run_stage

VERSION = 1


def profile_path(base_dir: Path, model: str, corpus_folder: Path, max_contexts: int | None = None) -> Path:
    first = f"_first{max_contexts}" if max_contexts else ""
    return Path(base_dir) / "sae" / f"{model}_{corpus_folder.name}{first}_layer_profile.json"


def hooked_runner(model: Any) -> Callable[[np.ndarray], list[np.ndarray]]:
    """run_model for layer_profile.residuals_at: every layer's hook_resid_pre of a TransformerLens model."""
    import torch

    hooks = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]

    def run(tokens: np.ndarray) -> list[np.ndarray]:
        store: dict[str, np.ndarray] = {}

        def grab(act, hook=None):
            store[hook.name] = act.detach().float().cpu().numpy()

        with torch.no_grad():
            model.run_with_hooks(torch.as_tensor(tokens.astype(np.int64)), return_type=None,
                                 fwd_hooks=[(name, grab) for name in hooks])
        return [store[name] for name in hooks]

    return run


def corpus_classes(source: Any, model: Any, *, model_name: str, base_dir: Path, ctx_len: int,
                   max_contexts: int | None = None) -> tuple[np.ndarray, TokenClasses]:
    """The corpus's contexts [C, ctx_len] (cut as every stage cuts them) and the calendar class of each token."""
    token_ids = np.asarray(cache_contexts(source, model, ctx_len, max_contexts), dtype=np.int64)
    tokenizer = load_tokenizer(model_name, base_dir=base_dir)
    strings = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return token_ids, token_classes(token_ids.reshape(-1), ctx_len, strings)


def build_profile(source: Any, *, model_name: str, base_dir: Path, get_model: Callable[[], Any],
                  ctx_len: int, seed: int, max_contexts: int | None) -> dict[str, Any]:
    model = get_model()
    token_ids, classes = corpus_classes(source, model, model_name=model_name, base_dir=base_dir, ctx_len=ctx_len,
                                        max_contexts=max_contexts)
    sample = LP.draw_sample(classes, seed=seed)
    contexts = len(np.unique(sample.positions // ctx_len))
    with tqdm(total=contexts, unit="ctx", desc="residuals at every layer") as bar:
        residuals = LP.residuals_at(hooked_runner(model), token_ids, sample.positions, progress=bar.update)
    rows = LP.profile(residuals, sample)
    return {"criterion": LP.CRITERION, "chosen_layer": LP.choose_layer(rows),
            "per_class_form": LP.PER_CLASS_FORM, "seed": seed, "contexts": contexts,
            "points": {kind: int((labels >= 0).sum()) for kind, labels in sample.labels.items()}, "layers": rows}


def run_layer_profile(corpus_folder: Path, *, model_name: str, model_info: dict[str, Any], base_dir: Path,
                      get_model: Callable[[], Any], ctx_len: int, seed: int = 0, max_contexts: int | None = None,
                      command: str | None = None) -> dict[str, Any]:
    """The layer profile of the corpus (of its first max_contexts contexts; a stage), printed, with its figure."""
    path = profile_path(base_dir, model_name, corpus_folder, max_contexts)
    source = make_text_source(dataset_path=corpus_folder / "dataset")
    settings = {"model": model_info, "source": source.fingerprint(), "ctx_len": ctx_len, "seed": seed,
                "max_contexts": max_contexts, "per_class_form": LP.PER_CLASS_FORM, "version": VERSION,
                "labels": LABELS_VERSION}

    def build(tmp: Path) -> None:
        save_json(tmp, build_profile(source, model_name=model_name, base_dir=base_dir, get_model=get_model,
                                     ctx_len=ctx_len, seed=seed, max_contexts=max_contexts))

    run_stage(Stage("layer profile of the calendar tokens", path, settings, command=command), build)
    result = load_json(path)
    print(format_profile(result))
    result["figure"] = str(profile_figure(result, path.with_suffix(".png")))
    result["path"] = str(path)
    return result


def format_profile(result: dict[str, Any]) -> str:
    lines = [f"{'layer':>5}" + "".join(f"{kind + ' ' + col:>17}" for kind in LP.KINDS
                                         for col in ("circle", "between", "adjacent"))]
    for row in result["layers"]:
        cells = []
        for kind in LP.KINDS:
            e = row[kind]
            cells += ([f"{e['circle_share']:>17.3f}", f"{e['between_share']:>17.3f}",
                       f"{e['adjacent_fraction']:>11.2f} ({e['adjacent_chance']:.2f})"] if e else [f"{'-':>17}"] * 3)
        lines.append(f"{row['layer']:>5}" + "".join(cells))
    chosen = result["chosen_layer"]
    lines.append(f"points: {result['points']} in {result['contexts']} contexts. circle = share of the tokens' "
                 f"residual variance on the class means' top-2 plane; between = share the class explains; adjacent = "
                 f"calendar order of the class means there (chance in brackets)")
    lines.append(f"chosen layer: {chosen if chosen is not None else 'none qualifies'} ({result['criterion']})")
    return "\n".join(lines)


def profile_figure(result: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    layers = [row["layer"] for row in result["layers"]]
    for kind, colour in zip(LP.KINDS, ("tab:blue", "tab:orange")):
        values = [row[kind]["circle_share"] if row[kind] else np.nan for row in result["layers"]]
        ordered = [bool(row[kind] and row[kind]["adjacent_fraction"] >= LP.ORDER_TARGET) for row in result["layers"]]
        ax.plot(layers, values, "-", color=colour, label=f"{kind}s")
        ax.plot([l for l, o in zip(layers, ordered) if o], [v for v, o in zip(values, ordered) if o], "o",
                color=colour, ms=4)
    if result["chosen_layer"] is not None:
        ax.axvline(result["chosen_layer"], color="k", ls="--", lw=1, label=f"chosen: {result['chosen_layer']}")
    ax.set_xlabel("layer (hook_resid_pre)")
    ax.set_ylabel("variance share on the circle plane")
    ax.set_title("Calendar tokens of the corpus (dots: class means in calendar order)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=150)
    plt.close(fig)
    return out
