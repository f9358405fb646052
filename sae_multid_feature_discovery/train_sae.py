"""Train a sparse autoencoder on a model's residual stream with SAELens' trainer and save it in SAELens' format.

    python sae_multid_feature_discovery/train_sae.py                          # SmolLM2 layer 8, the local corpus
    python sae_multid_feature_discovery/train_sae.py --architecture topk --k 32 --expansion 16
    python sae_multid_feature_discovery/train_sae.py --model_name gpt2 --layer 7 --dataset monology/pile-uncopyrighted --max_tokens 2000000

The model runs once over the text up to the hook (contexts cut as generate_feature_occurence_data.py cuts
them: BOS + the first ctx_len - 1 tokens of each document); the residuals are cached under
<base_dir>/sae_training/. SAELens' SAETrainer then trains on shuffled batches of them (BOS positions left
out; the last --eval_contexts contexts held out), and the SAE is saved (cfg.json + sae_weights.safetensors,
loadable with SAE.load_from_disk and by every script here through --sae_path) with training_metrics.json:
L0, explained variance, dead-feature fraction and the CE loss recovered when the SAE is spliced in, all on
the held-out contexts. Without a text option the local English corpus (multid.sae.data.local_corpus) is built
and used. A second run with the same settings reuses the cache and the SAE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.config import add_base_dir_arg, add_device_arg, positive_int
from multid.errors import cli_entry
from multid.models import MODEL_NAMES
from multid.sae.analysis import sae_trainer as T
from multid.sae.runners.sae_training import add_training_args, run_train_sae
from multid.sae.stage_configs import TrainConfig

D = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default=D.model_name, choices=("gpt-2",) + MODEL_NAMES,
                        help="model (default: %(default)s)")
    parser.add_argument("--model_path", default=None, help="local weights folder for the model")
    parser.add_argument("--layer", type=int, default=D.layer, help="layer whose resid_pre is read (default: %(default)s)")
    parser.add_argument("--hook", default=None, help="TransformerLens hook (default: blocks.<layer>.hook_resid_pre)")
    text = parser.add_argument_group("text (default: the local English corpus, built under <base_dir>/corpora)")
    text.add_argument("--dataset", default=None, help="Hugging Face dataset id, streamed (needs the hub)")
    text.add_argument("--dataset_path", default=None, help="a datasets folder written by save_to_disk")
    text.add_argument("--text_files", nargs="+", default=None, help=".txt / .jsonl files or folders of them")
    text.add_argument("--text_split", default="file", choices=("file", "paragraph", "line"),
                      help="with --text_files: one document per file, paragraph or line (default: %(default)s)")
    parser.add_argument("--ctx_len", type=positive_int, default=D.ctx_len, help="tokens per context incl. BOS "
                                                                          "(default: %(default)s)")
    parser.add_argument("--max_tokens", type=positive_int, default=None, help="use at most this many tokens of text")
    add_training_args(parser, D)
    parser.add_argument("--eval_contexts", type=positive_int, default=D.eval_contexts,
                        help="contexts held out for the metrics (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=D.seed, help="seed (default: %(default)s)")
    parser.add_argument("--out", default=None, help="SAE folder (default: <base_dir>/saes/<model>_layer<L>/<tag>)")
    add_device_arg(parser, default=D.device)
    return parser


def config_from_argv(argv: list[str] | None = None) -> TrainConfig:
    return config_from_args(TrainConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    config = config_from_argv(argv)
    result = run_train_sae(config)
    metrics = result.metrics
    print(f"text: {result.source.describe()}")
    print(f"SAE: {metrics['d_sae']} features on {metrics['hook']}, {metrics['training_tokens']:,} training tokens")
    print("  " + T.format_metrics(metrics))
    print("wrote:")
    print(f"  {result.path}  (use it with --sae_path)")
    print(f"  {result.path / T.METRICS_FILE}")
    return result.path


if __name__ == "__main__":
    main()
