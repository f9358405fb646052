"""The SAE feature occurrence dataset (paper section 4.1) as one stage: config, runner, result.

The script is sae_multid_feature_discovery/generate_feature_occurence_data.py; the format, writer and reader
are multid.sae.data.occurrence_store' (docs/sae_occurrences.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multid.config import resolve_base_dir, resolve_device
from multid.errors import UserError
from multid.models import lazy_loader
from multid.sae.analysis.occurrence_generator import GenerateOptions, generate_occurrences, portable_model_fingerprint
from multid.sae.analysis.sae_trainer import cached_encoder
from multid.sae.data import run_layout
from multid.sae.data.occurrence_store import ShardResult
from multid.sae.data.sae_loading import layer_of_hook, load_sae, resolve_sae_source
from multid.sae.data.text_sources import make_text_source
from multid.sae.stage_configs import OccurrencesConfig

UPSTREAM_LAYERS = {"gpt2": list(range(12)), "mistral": [8, 16, 24]}
UPSTREAM_BATCH = {"gpt2": 64, "mistral": 16}


@dataclass(frozen=True)
class LayerOccurrences:
    layer: int
    run: Path  # the run folder: occurrences/, decoder.npy, run.json
    shard: ShardResult


def generate_options(config: OccurrencesConfig) -> GenerateOptions:
    return GenerateOptions(ctx_len=config.ctx_len,
                           batch_size=config.batch_size or UPSTREAM_BATCH.get(config.model, 32),
                           max_tokens=config.max_tokens, max_pairs=config.max_pairs, num_shards=config.num_shards,
                           shard_index=config.shard_index, contexts_per_part=config.contexts_per_part,
                           progress=not config.no_progress)


def pick_layers(config: OccurrencesConfig) -> list[int]:
    """--layers, else the SAE's own layer (--sae_path without {layer}), else upstream's layers for the model."""
    if config.layers:
        return list(dict.fromkeys(config.layers))
    if config.sae_path is not None and "{layer}" not in config.sae_path:
        hook_layer = layer_of_hook(load_sae(config.model, None, sae_path=config.sae_path).hook_name)
        if hook_layer is None:
            raise UserError(f"cannot tell the layer of the SAE at {config.sae_path}; pass --layers")
        return [hook_layer]
    if config.model in UPSTREAM_LAYERS and config.sae_path is None:
        return UPSTREAM_LAYERS[config.model]
    raise UserError(f"pass --layers for model {config.model!r} (upstream defaults exist only for gpt2 and mistral)")


def check_layers(config: OccurrencesConfig, layers: list[int]) -> None:
    if config.sae_path is not None and "{layer}" not in config.sae_path and len(layers) > 1:
        raise UserError(f"--sae_path {config.sae_path} is one SAE (one layer) but --layers gives {len(layers)}; put "
                        f"{{layer}} in the path (e.g. saes/layer_{{layer}}) or run one layer at a time")
    if config.residual_cache is not None and len(layers) > 1:
        raise UserError("a residual cache holds one hook: run one layer at a time with it")


def text_source(config: OccurrencesConfig) -> Any:
    return make_text_source(dataset=config.dataset, text_files=config.text_files, dataset_path=config.dataset_path,
                            text_field=config.text_field, split=config.split, text_split=config.text_split)


@dataclass(frozen=True)
class OccurrencePlan:
    """What a run reads and does, checked before any long work."""

    source: Any
    layers: list[int]
    options: GenerateOptions


def plan_occurrences(config: OccurrencesConfig) -> OccurrencePlan:
    """The text, the layers and the generator's options; every option and each layer's SAE source checked."""
    options = generate_options(config)
    options.check()  # shard index, ctx_len, caps: before anything loads
    if config.sae_path is not None and config.release is not None:
        raise UserError("give --sae_path or --release, not both")
    source = text_source(config)
    layers = pick_layers(config)
    check_layers(config, layers)
    for layer in layers:
        resolve_sae_source(config.model, layer, sae_path=config.sae_path, release=config.release)
    return OccurrencePlan(source, layers, options)


def run_occurrences(config: OccurrencesConfig, plan: OccurrencePlan | None = None) -> list[LayerOccurrences]:
    """This process's shard of the occurrence dataset of every layer (written, resumed or reused); `plan`: the
    config's `plan_occurrences`, when the caller already made it."""
    plan = plan or plan_occurrences(config)
    torch.manual_seed(config.seed)  # nothing here is random (stream order as upstream); seeded all the same
    base_dir = resolve_base_dir(config.base_dir)
    device = resolve_device(config.device)
    get_model = config.get_model or lazy_loader(config.model, device=device, dtype=config.dtype,
                                                model_path=config.model_path, base_dir=base_dir,
                                                n_devices=config.n_devices)
    model_info = portable_model_fingerprint(config.model, config.model_path, config.dtype)
    options = plan.options
    done = []
    for layer in plan.layers:
        sae = load_sae(config.model, layer, sae_path=config.sae_path, release=config.release, device=device,
                       input_scaling=config.sae_input_scaling)
        run = run_layout.run_dir(base_dir, config.model, layer, sae.tag)
        encoder = None if config.residual_cache is None else \
            cached_encoder(config.residual_cache, sae, options.threshold)
        shard = generate_occurrences(run=run, model_name=config.model, layer=layer, sae=sae, source=plan.source,
                                     get_model=get_model, model_info=model_info, options=options,
                                     command=config.command(), encoder=encoder)
        done.append(LayerOccurrences(layer, run, shard))
        del sae
    return done
