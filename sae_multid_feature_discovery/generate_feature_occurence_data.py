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
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.config import (add_base_dir_arg, add_device_arg, add_dtype_arg, add_seed_arg, positive_int,
                           print_written)
from multid.errors import cli_entry
from multid.models import MODEL_NAMES
from multid.sae.data import run_layout
from multid.sae.data.text_sources import DEFAULT_DATASET, TEXT_SPLITS
from multid.sae.data.occurrence_store import shards_status
from multid.sae.runners.occurrence_data import plan_occurrences, run_occurrences
from multid.sae.stage_configs import OccurrencesConfig

MODEL_CHOICES = ("gpt-2",) + MODEL_NAMES
D = OccurrencesConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name", default=D.model_name, choices=MODEL_CHOICES,
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
    size.add_argument("--ctx_len", type=positive_int, default=D.ctx_len, help="tokens per context, BOS included "
                                                                        "(default: %(default)s)")
    size.add_argument("--batch_size", type=positive_int, default=None,
                      help="contexts per forward pass (default: upstream's, 64 for gpt2, 16 for mistral, else 32)")
    size.add_argument("--max_tokens", type=positive_int, default=None,
                      help="stop after this many tokens (whole contexts; over all shards together)")
    size.add_argument("--max_pairs", type=positive_int, default=D.max_pairs,
                      help="stop before exceeding this many (token, feature) pairs per layer; each of N shards "
                           "takes 1/N of it (default: %(default)s, upstream's capacity)")
    size.add_argument("--contexts_per_part", type=positive_int, default=D.contexts_per_part,
                      help="contexts per Parquet part file, the unit of resuming (default: %(default)s)")
    shard = parser.add_argument_group("sharding (e.g. a SLURM array: --num_shards 8 --shard_index $SLURM_ARRAY_TASK_ID)")
    shard.add_argument("--num_shards", type=positive_int, default=1, help="total number of shards (default: 1)")
    shard.add_argument("--shard_index", type=int, default=0, help="which shard this process writes (0-based)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def config_from_argv(argv: list[str] | None = None) -> OccurrencesConfig:
    return config_from_args(OccurrencesConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    config = config_from_argv(argv)
    plan = plan_occurrences(config)
    print(f"text: {plan.source.describe()}; layers {', '.join(map(str, plan.layers))}; shard {config.shard_index + 1} of "
          f"{config.num_shards}")
    written = []
    for done in run_occurrences(config, plan):
        result, run = done.shard, done.run
        state = "reused" if result.reused else f"stopped at {result.stop_reason}"
        print(f"layer {done.layer}: {result.num_contexts} contexts, {result.num_triples} pairs ({state}) in "
              f"{result.path}")
        num_shards, unfinished = shards_status(run)
        if unfinished:
            print(f"  {num_shards - len(unfinished)} of {num_shards} shards finished; still to run: shard index(es) "
                  f"{', '.join(map(str, unfinished[:16]))}{' ...' if len(unfinished) > 16 else ''}")
        else:
            print(f"  dataset complete: {run_layout.occurrences_dir(run)} (read with multid.sae.data.occurrence_store."
                  f"open_occurrences, or DuckDB: SELECT * FROM '{run_layout.occurrences_dir(run)}/**/triples-*.parquet')")
        written += [result.path, run_layout.decoder_path(run), run / "run.json"]
    print_written(written)
    return written


if __name__ == "__main__":
    main()
