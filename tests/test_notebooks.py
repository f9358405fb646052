"""Both notebooks execute headless against small artifacts (tiny model) and write non-empty figures."""

from __future__ import annotations

import nbformat
import pytest

from multid.circles.grid import compute_grid_logits
from multid.circles.sweep import SweepParams, run_circle_sweep
from multid.figures.render import NOTEBOOKS, choose_models, execute_notebook
from intervention.render_figures import main as render_main
from tests.conftest import build_caches


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory, tiny_model):
    """Everything the notebooks draw, made with the tiny model: caches, a sweep, Figure 6 grids, patching."""
    from intervention.activation_patching import main as patching_main

    base = tmp_path_factory.mktemp("notebook_base")
    caches = build_caches("tiny", tiny_model, base)
    run_circle_sweep(caches["days_of_week"], SweepParams("a"), base, [1, 2], lambda: tiny_model, progress=False)
    compute_grid_logits(caches["days_of_week"], 1, [2, 3], base, lambda: tiny_model, num_angles=8, num_radii=3)
    patching_main(["--model", "tiny", "--task", "days_of_week", "--base_dir", str(base), "--device", "cpu"])
    return base


EXPECTED = {
    "main_text_plots": ["tiny_figure3_pca.png", "tiny_figure5.png", "tiny_figure6_layer1.png",
                        "tiny_residuals_c_pca.png", "table1.csv"],
    "appendix_plots": ["tiny_weekdays_all_pca.png", "tiny_months_all_pca.png", "tiny_mlp_days_of_week_patching.png",
                       "tiny_attention_days_of_week_patching.png", "tiny_attention_head_days_of_week_patching.png",
                       "tiny_days_of_week_attention_head_patching.tex", "days_of_week_results.tex"],
}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_and_draws(name, artifact_dir):
    executed, html = execute_notebook(name, artifact_dir, artifact_dir / "notebooks", model="tiny")
    notebook = nbformat.read(executed, as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 4
    assert html.stat().st_size > 10_000
    for filename in EXPECTED[name]:
        path = artifact_dir / "figs" / "paper_plots" / filename
        min_size = 2_000 if path.suffix == ".png" else 60
        assert path.exists() and path.stat().st_size > min_size, path


def test_render_cli_skips_missing_artifacts_with_the_command(tmp_path, tiny_model, capsys):
    build_caches("tiny", tiny_model, tmp_path)  # caches only: no sweep, grid or patching
    written = render_main(["--base_dir", str(tmp_path), "--model", "tiny"])
    out = capsys.readouterr().out
    assert "skipped Figure 5" in out and "circle_probe_interventions.py day a tiny" in out
    assert "skipped Figure 6" in out and "skipped Patching heat maps" in out
    assert any(path.name == "tiny_figure3_pca.png" for path in written)
    assert choose_models(tmp_path).models == {"days_of_week": "tiny", "months_of_year": "tiny"}
