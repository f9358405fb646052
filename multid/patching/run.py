"""Activation patching for one model and task, then the appendix heat maps and head table (paper appendix).

For each layer type (resid, mlp, attention, attention_head) and keep-same setting (a, b) the sweep is saved
as `<base_dir>/figs/<model>_<task>/patching/<layer_type>/keep-same-<a|b>_n<pairs>.npz` with a png of the
mean, reusing files computed from the same cache with the same parameters. With both keep-same settings the
paper heat maps go into `<base_dir>/figs/paper_plots/` and, for attention heads, the top heads' outputs at
the last prompt token are stored and the head table (.tex/.csv) written. Pairs, metric and sites:
`multid.patching.activation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from multid.errors import UserError
from multid.patching.figures import (
    INDICATOR_MODES,
    head_patching_heatmap,
    head_table,
    layer_patching_heatmap,
    sweep_heatmap,
)
from multid.patching.activation import (
    DEFAULT_LIMIT_PER_EXAMPLE,
    DEFAULT_NUM_PAIRS,
    DEFAULT_SEED,
    KEEP_SAME,
    LAYER_TYPES,
    run_or_load_head_outputs,
    run_or_load_patching,
)


@dataclass(frozen=True)
class PatchingParams:
    """What one patching run computes (the sweep's own settings are stored with each sweep file)."""

    keep_same: tuple[str, ...] = KEEP_SAME
    layer_types: tuple[str, ...] = LAYER_TYPES
    num_pairs: int = DEFAULT_NUM_PAIRS
    limit_per_example: int = DEFAULT_LIMIT_PER_EXAMPLE
    seed: int = DEFAULT_SEED  # 42 reproduces upstream's pair order
    head_layers: tuple[int, int] | None = None  # default: 12..32 for 32-layer models, the same depth fraction otherwise
    top_heads: int = 10
    indicators: str = "p"  # head table one-hot widths: p, or upstream's fixed 8
    max_rows: int = 512  # patched prompts per forward pass

    def __post_init__(self) -> None:
        for name in ("num_pairs", "limit_per_example", "top_heads", "max_rows"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1; got {getattr(self, name)}")
        for keep in self.keep_same:
            if keep not in KEEP_SAME:
                raise UserError(f"--keep_same {keep!r} is not one of {', '.join(KEEP_SAME)} or both")
        for layer_type in self.layer_types:
            if layer_type not in LAYER_TYPES:
                raise UserError(f"--layer_type {layer_type!r} is not one of {', '.join(LAYER_TYPES)}")
        if self.indicators not in INDICATOR_MODES:
            raise UserError(f"--indicators {self.indicators!r} is not one of {', '.join(INDICATOR_MODES)}")


def patch_and_draw(cache, loader: Callable[[], Any], base_dir: Path, params: PatchingParams,
                   force: bool = False, figures: bool = True) -> list[Path]:
    """Every requested sweep (computed with `loader()` only if not current), then the paper heat maps and head table."""
    model, task = cache.model, cache.task
    written: list[Path] = []
    for layer_type in params.layer_types:
        for keep in params.keep_same:
            result, path, computed = run_or_load_patching(
                loader, cache, keep, layer_type, params.num_pairs, params.limit_per_example, params.seed,
                params.head_layers, force=force, max_rows=params.max_rows,
            )
            print(f"{layer_type:>14} keep-same-{keep}: {'computed' if computed else 'reused'} {tuple(result.scores.shape)} -> {path}")
            written.append(path)
            if figures:
                written.append(sweep_heatmap(path))
    if figures and len(params.keep_same) == 2:
        for layer_type in params.layer_types:
            if layer_type == "attention_head":
                paths, best = head_patching_heatmap(base_dir, model, task, params.num_pairs, params.top_heads)
                print("top heads (layer, head, effect): " + ", ".join(f"({l}, {h}, {e:.2f})" for l, h, e in best))
                outputs_path, _ = run_or_load_head_outputs(loader, cache, params.num_pairs, params.top_heads, force=force)
                table_paths, _ = head_table(base_dir, model, task, params.num_pairs, params.top_heads, params.indicators)
                written += paths + [outputs_path] + table_paths
            else:
                written += layer_patching_heatmap(base_dir, model, task, layer_type, params.num_pairs)
    elif figures:
        print("paper heat maps need both keep-same settings (--keep_same both); skipped")
    return written
