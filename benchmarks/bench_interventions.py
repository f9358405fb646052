"""Batched circle interventions vs upstream's one-run-at-a-time loop, on SmolLM2 (days, letter a, k=5, cos+sin).

    python -m benchmarks.bench_interventions [--layers 4 12] [--reference_runs 24] [--full_reference] [--device cpu]

Batched: the sweep engine (prefix keys/values once, suffix-only forwards from the patched layer, all
variants and runs in batches). Reference: 7 full forward passes per (problem, value) run with a hook, batch
size 1, as upstream. The full reference loop takes 294 runs x 7 passes per layer (tens of minutes on a
CPU), so by default it is timed on a fixed, evenly spaced subset of runs per layer and extrapolated to all
runs; the output says so. The max abs difference is over the runs the reference computed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from multid.tasks.cache import build_task_cache, prompt_tokens
from multid.circles.engine import PrefixKV, clean_answer_logits, layer_metrics, reference_layer_metrics
from multid.circles.probe import intervention_runs
from multid.circles.sweep import SweepParams, fit_layer_probe, letter_token, rows_per_forward
from multid.tasks.registry import get_task_spec
from multid.config import add_base_dir_arg, add_device_arg, resolve_base_dir, resolve_device
from multid.models import load_model

MODEL = "smollm2"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    add_device_arg(parser, default="cpu")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 12], help="cache layers (default: 4 12)")
    parser.add_argument("--reference_runs", type=int, default=24, help="runs per layer timed in the reference loop (default: %(default)s)")
    parser.add_argument("--full_reference", action="store_true", help="run the reference loop on every run (slow)")
    parser.add_argument("--batch_size", type=int, default=64, help="prompts per forward pass (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base_dir = resolve_base_dir(args.base_dir)
    device = resolve_device(args.device)
    model = load_model(MODEL, device=device, base_dir=base_dir)
    cache = build_task_cache(get_task_spec("days_of_week"), MODEL, base_dir, lambda: model)
    params = SweepParams("a", ("cos", "sin"), 5, null_permutations=1)
    token = letter_token(cache, "a")
    runs = intervention_runs(cache.infos, cache.p, "a")
    bases = {layer: fit_layer_probe(cache, params, layer).basis(device=device) for layer in args.layers}
    tokens = prompt_tokens(model, cache)
    print(f"{MODEL} days, letter a, k=5, cos+sin, layers {args.layers}, {len(runs)} runs/layer, device {device}, "
          f"{torch.get_num_threads()} thread(s)")

    started = time.perf_counter()
    prefix = PrefixKV(model, tokens, token, args.batch_size)
    clean = clean_answer_logits(model, cache, cache.answer_token_ids)
    rows = rows_per_forward(args.batch_size, cache.layout.seq_len, cache.layout.seq_len - token)
    batched = {layer: layer_metrics(model, cache, prefix, bases[layer], layer, runs, cache.answer_token_ids, clean, rows)
               for layer in args.layers}
    batched_s = time.perf_counter() - started

    subset = np.arange(len(runs)) if args.full_reference else np.linspace(0, len(runs) - 1, args.reference_runs).astype(int)
    started = time.perf_counter()
    reference = {layer: reference_layer_metrics(model, cache, tokens, bases[layer], layer, token, runs, cache.answer_token_ids,
                                                subset, progress=True) for layer in args.layers}
    reference_s = time.perf_counter() - started
    reference_all_s = reference_s * len(runs) / len(subset)
    max_diff = max(float(np.abs(batched[layer][:, subset] - reference[layer]).max()) for layer in args.layers)

    print(f"batched sweep:   {batched_s:8.1f} s for {len(args.layers)} layers x {len(runs)} runs x 7 variants")
    if args.full_reference:
        print(f"reference loop:  {reference_s:8.1f} s (all runs)")
    else:
        print(f"reference loop:  {reference_s:8.1f} s on {len(subset)} of {len(runs)} runs per layer -> "
              f"{reference_all_s:.1f} s extrapolated to all runs (linear in runs: every run costs 7 full forwards)")
    ratio = reference_all_s / batched_s
    print(f"speed-up:        {ratio:8.1f}x   (target >= 20x)")
    print(f"max |batched - reference| = {max_diff:.2e} (over {len(subset)} runs x 7 variants x {len(args.layers)} layers)")
    return {"batched_s": batched_s, "reference_s": reference_all_s, "ratio": ratio, "max_abs_diff": max_diff,
            "extrapolated": not args.full_reference}


if __name__ == "__main__":
    main()
