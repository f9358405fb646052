"""Every derived artifact of the intervention and deconstruction library is a `multid.stage` stage:
recorded with its settings and sizes, reused when current, recomputed when damaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import CountingLoader
from multid.circles.compare import run_comparison
from multid.circles.grid import compute_grid_logits, grid_path
from multid.circles.sweep import SweepParams, layer_result_path, run_circle_sweep
from multid.deconstruction.residual_rgb import DAYS, MONTHS, get_task, run_deconstruction
from multid.errors import UserError
from multid.patching.activation import SweepSettings, load_patching_result, run_or_load_patching
from multid.stage import describe, iter_records
from multid.tasks.cache import TaskCache
from multid.tasks.registry import get_task_spec

PARAMS = SweepParams("a", ("cos", "sin"), 5, null_permutations=3)


@pytest.fixture()
def base(tiny_base) -> Path:
    return tiny_base


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.integration
def test_every_artifact_kind_has_a_stage_record(tiny_model, base):
    cache = TaskCache.open(base, "tiny", "days_of_week")
    run_circle_sweep(cache, PARAMS, base, [1], CountingLoader(tiny_model), progress=False, make_figures=False)
    compute_grid_logits(cache, 1, [2], base, CountingLoader(tiny_model), num_angles=3, num_radii=2)
    run_comparison(cache, base, CountingLoader(tiny_model), layers=(1,), probe_layer=1, methods=("per_layer_probe",))
    run_or_load_patching(CountingLoader(tiny_model), cache, SweepSettings("resid", "a", num_pairs=3))
    run_deconstruction("months_of_year", model="tiny", base_dir=base, layers=[1], schedule="full", fmt="png", verbose=False)
    kinds = sorted({record["stage"].split(" of ")[0].split(" (")[0] for _, record in iter_records(base)})
    assert kinds == ["Figure 6 grid", "PCA-20", "PCA-5", "a-sweep layer 1", "activation cache for tiny / days_of_week",
                     "activation cache for tiny / months_of_year", "layer-1 a-probe", "months_of_year deconstruction R^2",
                     "months_of_year deconstruction figure", "per_layer_probe comparison", "resid patching"]


@pytest.mark.integration
def test_damaged_derived_artifacts_are_recomputed(tiny_model, base):
    cache = TaskCache.open(base, "tiny", "days_of_week")
    first = run_circle_sweep(cache, PARAMS, base, [1, 2], CountingLoader(tiny_model), progress=False, make_figures=False)
    cut_short(layer_result_path(base, cache, PARAMS, 2))
    again = run_circle_sweep(cache, PARAMS, base, [1, 2], CountingLoader(tiny_model), progress=False, make_figures=False)
    assert sorted(again.meta["timings_s"]) == ["2"]  # only the damaged layer was recomputed
    np.testing.assert_array_equal(again.means, first.means)

    grid = {"num_angles": 3, "num_radii": 2}
    logits = compute_grid_logits(cache, 1, [2], base, CountingLoader(tiny_model), **grid)[2].logits
    cut_short(grid_path(base, cache, 1, 5, 2))
    loader = CountingLoader(tiny_model)
    np.testing.assert_array_equal(compute_grid_logits(cache, 1, [2], base, loader, **grid)[2].logits, logits)
    assert loader.calls == 1

    settings = SweepSettings("mlp", "b", num_pairs=3)
    result, path, computed = run_or_load_patching(CountingLoader(tiny_model), cache, settings)
    assert computed and not run_or_load_patching(CountingLoader(tiny_model), cache, settings)[2]
    cut_short(path)
    with pytest.raises(UserError, match=r"damaged or unrecorded .*activation_patching.py --model tiny --task days_of_week"):
        load_patching_result(base, "tiny", "days_of_week", "mlp", "b", 3)
    repaired, _, computed = run_or_load_patching(CountingLoader(tiny_model), cache, settings)
    assert computed and np.array_equal(repaired.scores, result.scores)


@pytest.mark.integration
def test_a_rebuilt_cache_gives_its_derived_stages_new_inputs(tiny_model, base):
    from multid.tasks.cache import build_task_cache

    cache = TaskCache.open(base, "tiny", "days_of_week")
    stage = cache.pca_stage(2, 15, 5)
    cache.get_pca(2, 15, 5)
    assert describe(stage) == "current"
    rebuilt = build_task_cache(get_task_spec("days_of_week"), "tiny", base, lambda: tiny_model, answer_mode="bare")
    assert rebuilt.artifact_id != cache.artifact_id
    assert describe(stage) == "missing"  # the old folder's PCA files went with it
    assert rebuilt.pca_stage(2, 15, 5).settings["cache"] == rebuilt.artifact_id


@pytest.mark.integration
def test_deconstruction_outputs_are_reused_while_inputs_match(tiny_caches, base):
    run = lambda: run_deconstruction("months_of_year", model="tiny", base_dir=base, layers=[1, 2], schedule="full",  # noqa: E731
                                     fmt="png", verbose=False)
    figure, summary = run()
    stamps = figure.stat().st_mtime_ns, summary.stat().st_mtime_ns
    assert run() == (figure, summary) and (figure.stat().st_mtime_ns, summary.stat().st_mtime_ns) == stamps
    run_deconstruction("months_of_year", model="tiny", base_dir=base, layers=[1, 3], schedule="full", fmt="png", verbose=False)
    assert summary.stat().st_mtime_ns != stamps[1]  # other layers: written again


@pytest.mark.unit
def test_deconstruction_tasks_are_the_registry_tasks():
    assert DAYS.spec is get_task_spec("days_of_week") and MONTHS.spec is get_task_spec("months_of_year")
    assert (DAYS.task, DAYS.p, DAYS.paper_model) == ("days_of_week", 7, "mistral")
    assert (MONTHS.task, MONTHS.p, MONTHS.paper_model) == ("months_of_year", 12, "llama")
    assert get_task("day") is DAYS and get_task("months") is MONTHS
    with pytest.raises(UserError, match="unknown task 'weeks'"):
        get_task("weeks")
