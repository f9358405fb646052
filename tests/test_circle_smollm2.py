"""Circle probe and interventions on the real SmolLM2-135M (weekdays, start-word circle, one layer).

What SmolLM2 shows (it answers about 8/49 weekday problems, so the logit-difference metric barely moves
on average): the start-word circle is there (probe R^2 above the relabel null), and run by run patching
only the circle plane reproduces most of what patching the whole layer does to the metric, far more
than mean-ablating the token (whose per-run share sits near 0.5).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multid.tasks.cache import build_task_cache
from multid.circles.probe import VARIANTS
from multid.circles.sweep import SweepParams, run_circle_sweep
from multid.tasks.registry import get_task_spec

pytestmark = pytest.mark.smollm2


def test_days_a_sweep_one_layer(smollm2_model, tmp_path):
    torch.set_num_threads(1)
    cache = build_task_cache(get_task_spec("days_of_week"), "smollm2", tmp_path, lambda: smollm2_model)
    params = SweepParams("a", ("cos", "sin"), 5, null_permutations=50)
    result = run_circle_sweep(cache, params, tmp_path, [6], lambda: smollm2_model, progress=False)
    assert result.raw.shape == (1, len(VARIANTS), 294)
    r2 = result.r2.mean()
    assert r2 > 0.95 and r2 > result.null_mean[0] + 0.1
    noop = result.raw[0, VARIANTS.index("no_op")]
    layer_change = np.abs(result.raw[0, VARIANTS.index("patch_layer")] - noop).mean()
    assert layer_change > 0.1  # the start word matters to the answer logits, even if not as arithmetic
    circle_slope = result.per_run_recovery("patch_circle")[0][0]
    ablate_slope = result.per_run_recovery("average_ablate")[0][0]
    assert circle_slope > 0.7 and circle_slope > ablate_slope + 0.2
    assert result.paths["summary"].exists() and result.paths["probe_r2_figure"].stat().st_size > 0
