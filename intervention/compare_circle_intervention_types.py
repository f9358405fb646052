"""Compare patching a fixed-layer probe plane, an SAE subspace and each layer's own probe (rebuttal figure).

    cd intervention && python3 compare_circle_intervention_types.py --model mistral --device 0 --sae_pca PATH
    python -m intervention.compare_circle_intervention_types --model smollm2 --probe_layer 8 --layers 6 7 8 9 10 --sae_pca PATH

Upstream fixed Mistral, weekdays, letter a, cos+sin, k = 5, probe layer 8 and layers 6..10. The SAE
subspace comes from a PCA file you pass with --sae_pca (.npz/.pt with "components" [m, d]; the SAE part
of this repo is not implemented yet); without it, `--methods fixed_layer_probe per_layer_probe` runs the
other two. The file is checked before any model or cache work. See intervention/circle_compare.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.tasks.build import add_cache_args, model_loader, open_or_build_cache  # noqa: E402
from multid.circles.compare import (  # noqa: E402
    METHODS,
    comparison_dir,
    load_sae_components,
    plot_comparison,
    plot_sae_projections,
    read_sae_components,
    run_comparison,
)
from multid.circles.probe import VARIANTS  # noqa: E402
from multid.circles.sweep import PROBLEM_TYPES  # noqa: E402
from multid.tasks.registry import ALIASES  # noqa: E402
from multid.config import resolve_base_dir  # noqa: E402
from multid.errors import cli_entry  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(parser)
    parser.set_defaults(model="mistral")
    parser.add_argument("--problem_type", choices=PROBLEM_TYPES, default="day", help="(default: %(default)s)")
    parser.add_argument("--probe_layer", type=int, default=8, help="layer of the fixed probe and SAE fit (default: %(default)s)")
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 7, 8, 9, 10], help="target layers (default: 6..10)")
    parser.add_argument("--pca_k", type=int, default=5, help="PCA dimension (default: %(default)s)")
    parser.add_argument("--sae_pca", type=Path, default=None, help="SAE subspace PCA file (.npz/.pt with 'components')")
    parser.add_argument("--sae_pcs", type=int, nargs=2, default=[1, 2], help="which PCs of the file, 0-based (default: 1 2 = PCs 2 and 3)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="(default: all three)")
    parser.add_argument("--upstream_basis_pairing", action="store_true",
                        help="pair the fixed probe with the target layer's PCA basis, as upstream (see circle_compare.py)")
    parser.add_argument("--centered_interventions", action="store_true", help="centred patch-circle formula")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    started = time.time()
    if "sae_subspace" in args.methods:
        read_sae_components(args.sae_pca, args.sae_pcs)  # a missing or bad SAE file fails before the cache and model
    base_dir = resolve_base_dir(args.base_dir)
    load = model_loader(args)
    cache = open_or_build_cache(args, ALIASES[args.problem_type], load_model_fn=load)
    results = run_comparison(cache, base_dir, load, args.layers, args.probe_layer, args.pca_k, args.sae_pca, args.sae_pcs,
                             args.methods, args.upstream_basis_pairing, args.centered_interventions, args.batch_size)
    folder = comparison_dir(base_dir, cache)
    written = [result["path"] for result in results.values()]
    written.append(plot_comparison(results, args.probe_layer, folder / "circle_intervention_comparison.png"))
    if "sae_subspace" in args.methods:
        components = load_sae_components(args.sae_pca, args.sae_pcs, int(cache.meta["d_model"]))
        written.append(plot_sae_projections(cache, components, args.probe_layer, folder / "circle_sae_projections.png"))
    column = VARIANTS.index("patch_circle")
    for method, result in results.items():
        print(f"{method:<18} layer {int(result['layers'][0])} patch-circle mean {result['means'][0, column]:.4f}")
    print(f"done in {time.time() - started:.1f} s; wrote:")
    for path in written:
        print(f"  {path}")
    return results


if __name__ == "__main__":
    main()
