"""Benchmark: caching one task on SmolLM2, one batched pass vs one problem at a time (upstream style).

    python -m benchmarks.bench_cache [--task days_of_week] [--base_dir DIR]

Both runs produce the residual stream at every cache layer and position plus the last-position
logits; the printed ratio is baseline time / batched time, measured in this process.
"""

from __future__ import annotations

import argparse
import time

import torch

from multid.tasks.cache import collect_residuals
from multid.tasks.spec import align_problems, generate_problems, model_tokenize
from multid.tasks.registry import get_task_spec
from multid.config import add_base_dir_arg, resolve_base_dir
from multid.models import load_model


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="days_of_week")
    parser.add_argument("--model", default="smollm2")
    add_base_dir_arg(parser)
    args = parser.parse_args(argv)
    model = load_model(args.model, device="cpu", base_dir=resolve_base_dir(args.base_dir))
    spec = get_task_spec(args.task)
    problems, layout = align_problems(spec, generate_problems(spec), model_tokenize(model))
    tokens = model.to_tokens([problem.prompt for problem in problems])
    n_layers = model.cfg.n_layers + 1
    collect_residuals(model, tokens[:2], n_layers, batch_size=2)  # warm-up
    (resid_1, logits_1), one_at_a_time = timed(lambda: collect_residuals(model, tokens, n_layers, batch_size=1))
    (resid_b, logits_b), batched = timed(lambda: collect_residuals(model, tokens, n_layers, batch_size=len(problems)))
    diff = max((resid_1 - resid_b).abs().max().item(), (logits_1 - logits_b).abs().max().item())
    ratio = one_at_a_time / batched
    print(f"cache {args.model} {args.task}: {len(problems)} prompts x {layout.seq_len} tokens, {n_layers} cache layers, "
          f"{torch.get_num_threads()} threads")
    print(f"  one problem at a time: {one_at_a_time:7.2f} s")
    print(f"  one batched pass:      {batched:7.2f} s")
    print(f"  speed-up: {ratio:.1f}x   max abs difference: {diff:.2e}")
    return ratio


if __name__ == "__main__":
    main()
