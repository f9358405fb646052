"""Teach SmolLM2 the weekday and month arithmetic (LoRA, offline, CPU) and save it as model `smollm2-arith`.

    python3 intervention/finetune_arithmetic.py [--base_dir DIR]            # ~10 min on 2 CPU cores, once
    python3 intervention/days_of_week_task.py --model smollm2-arith          # then every script takes the name

Trains on other phrasings than the paper's prompts (never on them), merges the adapter and writes
`<base_dir>/models/smollm2-arith/` (a Hugging Face folder plus finetune.json with the settings and the
accuracies before and after); a second run with the same settings reuses it. docs/finetune.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a busy shared CPU, spinning threads made a training
# step ~10x slower. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.config import add_base_dir_arg, positive_int, resolve_base_dir  # noqa: E402
from multid.errors import cli_entry  # noqa: E402
from multid.finetune.train import DEFAULTS, default_settings, finetune, format_accuracies, with_overrides  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-arith", choices=tuple(DEFAULTS),
                        help="fine-tuned model to build (default: %(default)s; tiny-arith is the test model)")
    add_base_dir_arg(parser)
    default = DEFAULTS["smollm2-arith"]
    parser.add_argument("--steps", type=positive_int, default=None, help=f"optimizer steps (default: {default.steps})")
    parser.add_argument("--batch_size", type=positive_int, default=None, help=f"prompts per step (default: {default.batch_size})")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: {default.lr})")
    parser.add_argument("--rank", type=positive_int, default=None, help=f"LoRA rank (default: {default.rank})")
    parser.add_argument("--seed", type=int, default=None, help=f"seed of the data order and LoRA init (default: {default.seed})")
    parser.add_argument("--threads", type=positive_int, default=None, help=f"torch CPU threads (default: {default.threads})")
    parser.add_argument("--force", action="store_true", help="retrain even if a current fine-tuned folder exists")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    settings = with_overrides(default_settings(args.model), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              rank=args.rank, seed=args.seed, threads=args.threads)
    folder, report = finetune(args.model, resolve_base_dir(args.base_dir), settings, force=args.force)
    print("correct answers (top logit among the p words), before and after fine-tuning:")
    print(format_accuracies(report["accuracy_before"], report["accuracy_after"]))
    print(f"training: {report['train_seconds']:.0f} s on {report['torch_threads']} threads; "
          f"loss {report['loss_first_last_10'][0]:.3f} -> {report['loss_first_last_10'][1]:.3f}")
    print(f"model:    {folder}  (use it as --model {args.model})")
    return folder


if __name__ == "__main__":
    main()
