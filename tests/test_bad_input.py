"""Bad input as a new user gives it: one clear line and a non-zero exit, never a traceback;
and `render_figures.py`'s closing table, stale figures moved aside, and its exit status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from multid.config import REPO_ROOT, resolve_base_dir
from multid.errors import UserError
from multid.tasks.paths import load_results_csv, results_csv_path, task_dir

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_script(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=ENV)


def one_error_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single `error:` line of a failed run; no traceback."""
    assert done.returncode == code, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def tiny_copy(tiny_base_dir, tmp_path) -> Path:
    """A private, writable copy of the session's tiny caches (both tasks)."""
    base = tmp_path / "base"
    shutil.copytree(tiny_base_dir, base, ignore=shutil.ignore_patterns("*.lock", "figs"))
    return base


def spoil_first_a(csv_path: Path) -> str:
    """Replace the first data row's `a` by a letter of the same width (sizes stay as the cache recorded them)."""
    lines = csv_path.read_text().splitlines(keepends=True)
    first = lines[1]
    value = first.split(",")[0]
    lines[1] = "x" * len(value) + first[len(value):]
    csv_path.write_text("".join(lines))
    return "x" * len(value)


# ------------------------------------------------------------------------ a non-integer in results.csv


@pytest.mark.unit
def test_results_csv_with_a_word_for_a_number_names_line_column_and_value(tmp_path):
    folder = tmp_path / "smollm2_days_of_week"
    folder.mkdir()
    path = folder / "results.csv"
    path.write_text("a,b,c,ground_truth,model_out,model_correct,best_token\n"
                    "1,7,1,Tuesday,Tuesday,True,Tuesday\n"
                    "6,four,3,Thursday,Seven,False,Friday\n")
    with pytest.raises(UserError) as info:
        load_results_csv(path)
    message = str(info.value)
    assert f"{path} line 3, column b: 'four' is not an integer" in message
    assert f"days_of_week_task.py --model smollm2 --base_dir {tmp_path} --force" in message
    # upstream's layout (", "-separated, no best_token) with a fractional value; outside a cache folder
    upstream = tmp_path / "results.csv"
    upstream.write_text("a, b, c, ground_truth, model_out, model_correct\n0, 1, 1, Tuesday, Tuesday, True\n"
                        "2, 1.5, 3, Thursday, Thursday, True\n")
    with pytest.raises(UserError, match=r"line 3, column b: '1.5' is not an integer.*Copy the file again"):
        load_results_csv(upstream)


@pytest.mark.unit
def test_good_results_csv_reads_exact_integers(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("a, b, c, ground_truth, model_out, model_correct\n0, 1, 1, Tuesday, Tuesday, True\n"
                    "6, 12, 4, Friday, day, False\n")
    frame = load_results_csv(path)
    assert frame[["a", "b", "c"]].to_numpy().tolist() == [[0, 1, 1], [6, 12, 4]]
    assert str(frame["a"].dtype).startswith("int") and frame["model_correct"].tolist() == [True, False]


@pytest.mark.acceptance
def test_table1_cli_on_a_non_integer(tiny_copy):
    path = results_csv_path(task_dir(tiny_copy, "tiny", "days_of_week"))
    bad = spoil_first_a(path)
    line = one_error_line(run_script("intervention/table1.py", "--base_dir", str(tiny_copy)))
    assert f"{path} line 2, column a: '{bad}' is not an integer" in line
    assert f"python3 intervention/days_of_week_task.py --model tiny --base_dir {tiny_copy} --force" in line


@pytest.mark.acceptance
def test_deconstruction_cli_on_a_non_integer(tiny_copy, tmp_path):
    """Upstream's way (files copied beside the script, here named with --results_csv / --pca_dir)."""
    folder = task_dir(tiny_copy, "tiny", "days_of_week")
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copy(results_csv_path(folder), copied / "results.csv")
    bad = spoil_first_a(copied / "results.csv")
    script = REPO_ROOT / "feature_deconstruction" / "days_of_the_week" / "days_of_the_week_deconstruction.py"
    done = run_script(script.name, "--results_csv", str(copied / "results.csv"), "--pca_dir", str(folder / "pca"),
                      "--token", "12", "--out_dir", str(tmp_path / "out"), cwd=script.parent)
    line = one_error_line(done)
    assert f"{copied / 'results.csv'} line 2, column a: '{bad}' is not an integer" in line
    assert "Copy the file again" in line


# ------------------------------------------------------------------------ base dir: a file, or not writable


@pytest.mark.acceptance
@pytest.mark.parametrize("script", ["intervention/days_of_week_task.py", "intervention/render_figures.py",
                                    "intervention/table1.py"])
def test_base_dir_that_is_a_file_says_so(script, tmp_path):
    blocker = tmp_path / "artifacts"
    blocker.write_text("not a folder")
    extra = ["--model", "tiny", "--device", "cpu"] if "task" in script else []
    line = one_error_line(run_script(script, "--base_dir", str(blocker), *extra))
    assert line == (f"error: base dir {blocker} is a file, not a folder; pass --base_dir to a writable folder "
                    f"or set MULTID_BASE_DIR")
    assert blocker.read_text() == "not a folder"


@pytest.mark.acceptance
def test_render_on_a_base_dir_whose_figure_folder_cannot_be_made(tiny_copy):
    (tiny_copy / "figs").write_text("")  # stands for any folder the renderer cannot write into
    line = one_error_line(run_script("intervention/render_figures.py", "--base_dir", str(tiny_copy), "--model", "tiny"))
    assert f"figure folder {tiny_copy}/figs/paper_plots cannot be made: {tiny_copy}/figs is a file" in line


@pytest.mark.acceptance
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_render_on_a_read_only_base_dir(tiny_copy):
    for folder in [tiny_copy, *tiny_copy.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o555)
    try:
        line = one_error_line(run_script("intervention/render_figures.py", "--base_dir", str(tiny_copy), "--model", "tiny"))
    finally:
        for folder in [tiny_copy, *tiny_copy.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
    assert f"figure folder {tiny_copy}/figs/paper_plots is not writable" in line and "--base_dir" in line


@pytest.mark.unit
def test_a_write_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    """Any atomic write into an unusable folder (read-only, full) becomes a UserError naming the file."""
    import tempfile

    from multid.io import save_json

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(UserError, match=rf"cannot write {tmp_path}/x.json: Permission denied .*--base_dir"):
        save_json(tmp_path / "x.json", {"a": 1})
    assert not (tmp_path / "x.json").exists()


@pytest.mark.unit
def test_resolve_base_dir_refuses_a_file_also_when_only_reading(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        resolve_base_dir(blocker, create=False)
    assert resolve_base_dir(tmp_path / "not_yet", create=False) == (tmp_path / "not_yet").resolve()
    assert not (tmp_path / "not_yet").exists()


# ------------------------------------------------------------------------ --model_path without weights


def config_only_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    return folder


@pytest.mark.unit
def test_model_folder_with_a_config_but_no_weights(tmp_path):
    from multid.models import load_model

    folder = config_only_folder(tmp_path / "model")
    with pytest.raises(UserError, match=rf"--model_path {folder} has a config.json but no weights"):
        load_model("smollm2", model_path=folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)  # present but damaged
    with pytest.raises(UserError, match=rf"--model_path {folder}: the weights could not be read \(\w+"):
        load_model("smollm2", model_path=folder)


@pytest.mark.acceptance
def test_task_cli_with_a_weightless_model_folder(tmp_path):
    folder = config_only_folder(tmp_path / "model")
    done = run_script("intervention/days_of_week_task.py", "--model", "smollm2", "--model_path", str(folder),
                      "--device", "cpu", "--base_dir", str(tmp_path / "base"))
    assert one_error_line(done) == (
        f"error: --model_path {folder} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
        "copy the weight files into it (save_pretrained writes them)"
    )
    assert "loading" not in done.stdout  # refused before any work
    assert not (tmp_path / "base" / "smollm2_days_of_week").exists()


# ------------------------------------------------------------------------ render_figures: table, stale, exit


def render(base: Path, *args: str, capsys) -> tuple[int, str, str]:
    from intervention.render_figures import main as render_main

    try:
        render_main(["--base_dir", str(base), "--model", "tiny", *args])
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(out: str) -> dict[str, str]:
    """step key -> its first row's result column, from the closing table."""
    table = out.split("files drawn / to make what is missing", 1)[1].splitlines()[2:]
    return {line.split()[0]: line.split()[1] for line in table if line and not line.startswith(" ")}


@pytest.mark.integration
def test_render_ends_with_a_table_and_exits_0_by_default(tiny_copy, capsys):
    code, out, _ = render(tiny_copy, capsys=capsys)
    assert code == 0
    rows = table_rows(out)
    assert rows == {"figure3": "drawn", "figure5": "SKIPPED", "figure6": "SKIPPED", "residual_c": "drawn",
                    "table1": "drawn", "all_layer_pca": "drawn", "patching": "SKIPPED", "head_patching": "SKIPPED",
                    "results_tables": "drawn"}
    assert f"make: python3 intervention/circle_probe_interventions.py day a tiny --intervention_pca_k 5 " \
           f"--probe_on_cos --probe_on_sin --base_dir {tiny_copy}" in out
    assert f"make: python3 intervention/activation_patching.py --model tiny --task months_of_year --num_pairs 20 " \
           f"--base_dir {tiny_copy}" in out
    assert "figs/paper_plots/tiny_figure3_pca.png" in out


@pytest.mark.integration
def test_render_moves_an_older_figure_of_a_skipped_step_aside_and_fails_when_asked(tiny_copy, capsys):
    plots = tiny_copy / "figs" / "paper_plots"
    plots.mkdir(parents=True)
    (plots / "tiny_figure5.png").write_bytes(b"an older figure 5")
    (plots / "tiny_residuals_c_pca.png").write_bytes(b"an older residual panel")
    code, out, err = render(tiny_copy, "--only", "figure5", "residual_c", capsys=capsys)
    assert code == 1
    assert err.strip() == ("error: not drawn: figure5 (asked for with --only); make what is missing with the commands "
                           "in the table")
    assert not (plots / "tiny_figure5.png").exists()
    assert (plots / "stale" / "tiny_figure5.png").read_bytes() == b"an older figure 5"
    assert "older file(s) moved to figs/paper_plots/stale/: tiny_figure5.png" in out
    # the step that could be drawn replaced its file and left nothing in stale/
    assert (plots / "tiny_residuals_c_pca.png").read_bytes()[:4] == b"\x89PNG"
    assert not (plots / "stale" / "tiny_residuals_c_pca.png").exists()
    assert table_rows(out) == {"figure5": "SKIPPED", "residual_c": "drawn"}


@pytest.mark.integration
def test_render_part_fails_when_a_step_of_it_is_missing_and_only_passes_when_drawn(tiny_copy, capsys):
    code, out, err = render(tiny_copy, "--part", "main", capsys=capsys)
    assert code == 1 and "error: not drawn: figure5, figure6 (asked for with --part)" in err
    code, out, err = render(tiny_copy, "--only", "figure3", "table1", capsys=capsys)
    assert code == 0 and err == "" and table_rows(out) == {"figure3": "drawn", "table1": "drawn"}


@pytest.mark.acceptance
def test_render_cli_exit_status_and_table(tiny_copy):
    done = run_script("intervention/render_figures.py", "--base_dir", str(tiny_copy), "--model", "tiny", "--only", "figure6")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "figure6  SKIPPED" in done.stdout and "intervene_in_middle_of_circle.py --model tiny" in done.stdout


# ------------------------------------------------------------------------ same command, same bytes


@pytest.mark.unit
def test_save_pt_bytes_do_not_depend_on_the_file_name(tmp_path):
    import torch

    from multid.io import load_pt, save_pt

    obj = {"coords": torch.arange(12, dtype=torch.float32).reshape(4, 3), "k": 3}
    first = save_pt(tmp_path / "layer4.pt", obj).read_bytes()
    second = save_pt(tmp_path / "sub" / "another_name.pt", obj).read_bytes()
    assert first == second
    assert torch.equal(load_pt(tmp_path / "layer4.pt")["coords"], obj["coords"])


@pytest.mark.integration
def test_same_task_command_writes_the_same_bytes(tmp_path, capsys):
    """A forced rebuild by the task script gives byte-identical arrays and tables (temporary names differ)."""
    from multid.tasks.build import main as build_cache_main

    def build(base: Path, *extra: str) -> dict[str, bytes]:
        build_cache_main("days_of_week", ["--model", "tiny", "--device", "cpu", "--base_dir", str(base), "--pca_k", "3", *extra])
        folder = task_dir(base, "tiny", "days_of_week")
        return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
                if path.suffix in (".pt", ".csv", ".npz")}

    first = build(tmp_path / "one")
    assert len([name for name in first if name.startswith("acts/")]) == 4 and "results.csv" in first
    assert build(tmp_path / "one", "--force") == first
