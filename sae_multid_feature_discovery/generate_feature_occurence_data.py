"""Run a model over a text corpus and store every nonzero SAE feature activation (paper section 4.1).

    cd sae_multid_feature_discovery && python3 generate_feature_occurence_data.py --model_name gpt-2 --layers 7
    python -m sae_multid_feature_discovery.generate_feature_occurence_data --model_name mistral --layers 8
    python3 generate_feature_occurence_data.py --model_name smollm2 --layers 9 --sae_path my_sae \\
        --text_files corpus/ --max_tokens 1000000

For each layer: contexts of --ctx_len tokens (BOS + the first tokens of each document; shorter documents are
skipped), run through the model up to the SAE's hook only, encoded by the SAE; every (token, feature, value)
with value > 1e-6 is stored in a Parquet dataset under <base_dir>/sae/<model>_layer<L>_<sae>/occurrences/
(format: docs/sae_occurrences.md), with the token ids beside it and the SAE decoder as decoder.npy.
Written in parts, so an interrupted run resumes at the next unfinished part. --num_shards N --shard_index i
computes only contexts c with c % N == i: run the N shards anywhere (a SLURM array, several GPUs or machines,
same --base_dir or folders copied together afterwards); readers take all shards as one dataset.

Defaults as upstream: the Pile (monology/pile-uncopyrighted, streamed), ctx_len 256, at most 1e9 pairs per
layer, GPT-2 small layers 0-11 with the gpt2-small-res-jb SAEs, Mistral-7B layers 8 16 24 with the paper's SAEs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import (add_base_dir_arg, add_device_arg, add_dtype_arg, add_seed_arg, positive_int,
                           print_written, resolve_base_dir, resolve_device)
from multid.errors import UserError, cli_entry
from multid.models import MODEL_NAMES, lazy_loader
from multid.sae import paths
from multid.sae.corpus import DEFAULT_DATASET, TEXT_SPLITS, make_text_source
from multid.sae.loading import layer_of_hook, load_sae, resolve_sae_source
from multid.sae.occurrences import (DEFAULT_CONTEXTS_PER_PART, DEFAULT_MAX_PAIRS, GenerateOptions,
                                    generate_occurrences, portable_model_fingerprint, shards_status)

UPSTREAM_LAYERS = {"gpt2": list(range(12)), "mistral": [8, 16, 24]}
UPSTREAM_BATCH = {"gpt2": 64, "mistral": 16}
MODEL_CHOICES = ("gpt-2",) + MODEL_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name", default="mistral", choices=MODEL_CHOICES,
                        help="model (gpt-2 = gpt2, upstream's name; default: %(default)s)")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="layers to run, one run folder each (default: upstream's, gpt2 0-11, mistral 8 16 24; "
                             "with --sae_path: the SAE's own layer)")
    parser.add_argument("--sae_path", default=None,
                        help="SAE on disk instead of the hub: a SAELens folder (cfg.json + sae_weights.safetensors) "
                             "or the paper's Mistral .pt; '{layer}' in it is replaced by each layer")
    parser.add_argument("--sae_input_scaling", default="auto", choices=("auto", "none", "norm_sqrt_d"),
                        help="rescale SAE inputs to norm sqrt(d) as the paper's Mistral SAEs need (auto: the paper's "
                             ".pt, mistral-7b-res-wg and its copies, constant_norm_rescale configs; default: auto)")
    parser.add_argument("--release", default=None,
                        help="SAELens release to download (default: gpt2-small-res-jb / mistral-7b-res-wg)")
    parser.add_argument("--model_path", default=None,
                        help="local Hugging Face folder with the model's weights (instead of the hub download)")
    parser.add_argument("--n_devices", type=positive_int, default=1,
                        help="GPUs to split the model over (upstream used 2 for Mistral; default: %(default)s)")
    add_device_arg(parser)
    add_dtype_arg(parser)
    add_base_dir_arg(parser)
    add_seed_arg(parser)
    text = parser.add_argument_group("text (one source; default: the Pile streamed from the hub, as upstream)")
    text.add_argument("--dataset", default=None, help=f"Hugging Face dataset id, streamed (default: {DEFAULT_DATASET})")
    text.add_argument("--text_files", nargs="+", default=None,
                      help="local text: .txt files or folders of them, and/or .jsonl files with a 'text' field")
    text.add_argument("--dataset_path", default=None, help="local datasets folder written by save_to_disk")
    text.add_argument("--text_field", default="text", help="field holding the text (default: %(default)s)")
    text.add_argument("--split", default="train", help="dataset split (default: %(default)s)")
    text.add_argument("--text_split", default="file", choices=TEXT_SPLITS,
                      help="how a .txt file is cut into documents (default: %(default)s, one document per file)")
    size = parser.add_argument_group("size")
    size.add_argument("--ctx_len", type=positive_int, default=256, help="tokens per context, BOS included "
                                                                        "(default: %(default)s)")
    size.add_argument("--batch_size", type=positive_int, default=None,
                      help="contexts per forward pass (default: upstream's, 64 for gpt2, 16 for mistral, else 32)")
    size.add_argument("--max_tokens", type=positive_int, default=None,
                      help="stop after this many tokens (whole contexts; over all shards together)")
    size.add_argument("--max_pairs", type=positive_int, default=DEFAULT_MAX_PAIRS,
                      help="stop before exceeding this many (token, feature) pairs per layer; each of N shards "
                           "takes 1/N of it (default: %(default)s, upstream's capacity)")
    size.add_argument("--contexts_per_part", type=positive_int, default=DEFAULT_CONTEXTS_PER_PART,
                      help="contexts per Parquet part file, the unit of resuming (default: %(default)s)")
    shard = parser.add_argument_group("sharding (e.g. a SLURM array: --num_shards 8 --shard_index $SLURM_ARRAY_TASK_ID)")
    shard.add_argument("--num_shards", type=positive_int, default=1, help="total number of shards (default: 1)")
    shard.add_argument("--shard_index", type=int, default=0, help="which shard this process writes (0-based)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def pick_layers(args: argparse.Namespace, model: str) -> list[int]:
    if args.layers:
        return list(dict.fromkeys(args.layers))
    if args.sae_path is not None and "{layer}" not in args.sae_path:
        hook_layer = layer_of_hook(load_sae(model, None, sae_path=args.sae_path).hook_name)
        if hook_layer is None:
            raise UserError(f"cannot tell the layer of the SAE at {args.sae_path}; pass --layers")
        return [hook_layer]
    if model in UPSTREAM_LAYERS and args.sae_path is None:
        return UPSTREAM_LAYERS[model]
    raise UserError(f"pass --layers for model {model!r} (upstream defaults exist only for gpt2 and mistral)")


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(shlex.quote(a) for a in ["python", "sae_multid_feature_discovery/generate_feature_occurence_data.py",
                                            *args])


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    model = paths.canonical_model(args.model_name)
    if not 0 <= args.shard_index < args.num_shards:
        raise UserError(f"--shard_index must be in [0, {args.num_shards}) for --num_shards {args.num_shards}, "
                        f"got {args.shard_index}")
    if args.sae_path is not None and args.release is not None:
        raise UserError("give --sae_path or --release, not both")
    import torch

    torch.manual_seed(args.seed)  # nothing here is random (stream order as upstream); seeded all the same
    source = make_text_source(dataset=args.dataset, text_files=args.text_files, dataset_path=args.dataset_path,
                              text_field=args.text_field, split=args.split, text_split=args.text_split)
    layers = pick_layers(args, model)
    if args.sae_path is not None and "{layer}" not in args.sae_path and len(layers) > 1:
        raise UserError(f"--sae_path {args.sae_path} is one SAE (one layer) but --layers gives {len(layers)}; put "
                        f"{{layer}} in the path (e.g. saes/layer_{{layer}}) or run one layer at a time")
    for layer in layers:  # check every layer's SAE source before any long work
        resolve_sae_source(model, layer, sae_path=args.sae_path, release=args.release)
    base_dir = resolve_base_dir(args.base_dir)
    device = resolve_device(args.device)
    get_model = lazy_loader(model, device=device, dtype=args.dtype, model_path=args.model_path, base_dir=base_dir,
                            n_devices=args.n_devices)
    model_info = portable_model_fingerprint(model, args.model_path, args.dtype)
    options = GenerateOptions(ctx_len=args.ctx_len, batch_size=args.batch_size or UPSTREAM_BATCH.get(model, 32),
                              max_tokens=args.max_tokens, max_pairs=args.max_pairs, num_shards=args.num_shards,
                              shard_index=args.shard_index, contexts_per_part=args.contexts_per_part,
                              progress=not args.no_progress)
    options.check()
    print(f"text: {source.describe()}; layers {', '.join(map(str, layers))}; shard {args.shard_index + 1} of "
          f"{args.num_shards}")
    written = []
    for layer in layers:
        sae = load_sae(model, layer, sae_path=args.sae_path, release=args.release, device=device,
                       input_scaling=args.sae_input_scaling)
        run = paths.run_dir(base_dir, model, layer, sae.tag)
        result = generate_occurrences(run=run, model_name=model, layer=layer, sae=sae, source=source,
                                      get_model=get_model, model_info=model_info, options=options,
                                      command=command_line(argv))
        state = "reused" if result.reused else f"stopped at {result.stop_reason}"
        print(f"layer {layer}: {result.num_contexts} contexts, {result.num_triples} pairs ({state}) in {result.path}")
        num_shards, unfinished = shards_status(run)
        if unfinished:
            print(f"  {num_shards - len(unfinished)} of {num_shards} shards finished; still to run: shard index(es) "
                  f"{', '.join(map(str, unfinished[:16]))}{' ...' if len(unfinished) > 16 else ''}")
        else:
            print(f"  dataset complete: {paths.occurrences_dir(run)} (read with multid.sae.occurrences."
                  f"open_occurrences, or DuckDB: SELECT * FROM '{paths.occurrences_dir(run)}/**/triples-*.parquet')")
        written += [result.path, paths.decoder_path(run), run / "run.json"]
        del sae
    print_written(written)
    return written


if __name__ == "__main__":
    main()
