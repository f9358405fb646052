"""SAE training on a model's cached residuals as one stage: config, runner, result.

The script is sae_multid_feature_discovery/train_sae.py; the cache and the trainer are multid.sae.analysis.sae_trainer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multid.commands import as_path
from multid.config import resolve_base_dir, resolve_device
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
    return T.TrainSettings(architecture=config.architecture, expansion=config.expansion,
                           l1_coefficient=config.l1_coefficient, k=config.k, training_tokens=config.training_tokens,
                           batch_size=config.batch_size, lr=config.lr, eval_contexts=config.eval_contexts,
                           seed=config.seed)


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
