"""SAE training on a model's cached residuals as one stage: config, runner, result.

The script is sae_multid_feature_discovery/train_sae.py; the cache and the trainer are multid.sae.analysis.sae_trainer's.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multid.commands import as_path
from multid.config import positive_int, resolve_base_dir, resolve_device
from multid.models import lazy_loader
from multid.sae.data import local_corpus, run_layout
from multid.sae.analysis import sae_trainer as T
from multid.sae.data.text_sources import make_text_source
from multid.sae.analysis.occurrence_generator import portable_model_fingerprint
from multid.sae.stage_configs import TrainConfig
from multid.sae.data.tokenizers import load_tokenizer


@dataclass(frozen=True)
class TrainResult:
    path: Path  # the SAE folder (SAELens format; use it with --sae_path)
    cache: T.ActivationCache  # the residuals it was trained on
    source: Any  # the text
    model_info: dict[str, Any]
    metrics: dict[str, Any]


def train_settings(config: TrainConfig) -> T.TrainSettings:
    names = [f.name for f in dataclasses.fields(T.TrainSettings) if hasattr(config, f.name)]
    return T.TrainSettings(**{name: getattr(config, name) for name in names})


TRAINING_OPTIONS = ("architecture", "expansion", "l1_coefficient", "k", "matryoshka_levels", "aux_loss_coefficient",
                    "dead_feature_window", "normalisation", "b_dec_init", "training_tokens", "batch_size", "lr")


def add_training_args(parser: argparse.ArgumentParser, defaults: TrainConfig = TrainConfig()) -> None:
    """The SAE's shape and training options (train_sae.py and make discover share them); exactly the options of
    TRAINING_OPTIONS, which make discover copies into its TrainConfig (checked here, so neither list can drift)."""
    group = parser.add_argument_group("the SAE and its training (docs/discover.md: the attempts table)")
    added: list[str] = []

    def add(flag: str, **options) -> None:
        added.append(group.add_argument(flag, **options).dest)

    add("--architecture", choices=T.ARCHITECTURES, default=defaults.architecture,
        help="standard (ReLU + L1, as the paper's SAEs), topk, batchtopk (k on average over a batch) or matryoshka "
             "(batchtopk with nested widths) (default: %(default)s)")
    add("--expansion", type=positive_int, default=defaults.expansion, help="d_sae / d_in (default: %(default)s)")
    add("--l1_coefficient", type=float, default=defaults.l1_coefficient,
        help="standard: L1 coefficient on activations normalised to mean norm sqrt(d) (default: %(default)s)")
    add("--k", type=positive_int, default=defaults.k, help="topk family: active features per token "
                                                            "(default: %(default)s)")
    add("--matryoshka_levels", type=positive_int, default=defaults.matryoshka_levels,
        help="matryoshka: nested widths d_sae / 2^(levels-1), ..., d_sae (default: %(default)s)")
    add("--aux_loss_coefficient", type=float, default=defaults.aux_loss_coefficient,
        help="topk family: weight of the AuxK loss that trains dead features on the residual error "
             "(default: %(default)s)")
    add("--dead_feature_window", type=positive_int, default=defaults.dead_feature_window,
        help="steps without firing after which AuxK counts a feature dead (default: %(default)s)")
    add("--normalisation", choices=T.NORMALISATIONS, default=defaults.normalisation,
        help="fixed: residuals scaled to mean norm sqrt(d) by a factor from the whole training set; trainer: "
             "SAELens' estimate from 20 batches; both folded into the saved weights (default: %(default)s)")
    add("--b_dec_init", choices=T.B_DEC_INITS, default=defaults.b_dec_init,
        help="decoder bias at the start: the training positions' mean, or zeros (default: %(default)s)")
    add("--training_tokens", type=positive_int, default=defaults.training_tokens,
        help="tokens seen in training; the cached positions are reshuffled each epoch (default: %(default)s)")
    add("--batch_size", type=positive_int, default=defaults.batch_size,
        help="positions per training step (default: %(default)s)")
    add("--lr", type=float, default=defaults.lr, help="Adam learning rate (default: %(default)s)")
    if tuple(added) != TRAINING_OPTIONS:
        raise AssertionError(f"add_training_args adds {added}, TRAINING_OPTIONS lists {list(TRAINING_OPTIONS)}")


def run_train_sae(config: TrainConfig) -> TrainResult:
    """The residual cache and the SAE trained on it (both stages: reused when current)."""
    model = run_layout.canonical_model(config.model_name)
    base_dir = resolve_base_dir(config.base_dir)
    settings = train_settings(config)
    settings.check()
    out = as_path(config.out)
    if config.dataset or config.dataset_path or config.text_files:
        source = make_text_source(dataset=config.dataset, text_files=config.text_files,
                                  dataset_path=config.dataset_path, text_split=config.text_split)
    else:
        folder = local_corpus.local_corpus_stage(base_dir, tokenizer=load_tokenizer(model, base_dir=base_dir),
                                                 tokenizer_name=model)
        source = make_text_source(dataset_path=folder / "dataset")
        if config.max_tokens is None:  # the whole local corpus: no text suffix in the SAE's name (as make discover)
            out = out or T.sae_folder(base_dir, model, config.layer, settings, hook=config.hook,
                                      ctx_len=config.ctx_len)
    get_model = config.get_model or lazy_loader(model, device=resolve_device(config.device),
                                                model_path=config.model_path, base_dir=base_dir)
    model_info = portable_model_fingerprint(model, config.model_path, "float32")
    path, cache = T.train_sae_for_model(
        base_dir=base_dir, model_name=model, layer=config.layer, hook=config.hook, source=source,
        ctx_len=config.ctx_len, settings=settings, get_model=get_model, model_info=model_info,
        max_contexts=config.max_contexts, out=out, command=config.command())
    return TrainResult(path, cache, source, model_info, T.read_metrics(path))
