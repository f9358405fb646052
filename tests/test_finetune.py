"""The arithmetic fine-tune: training data never holds the paper's prompts; a few-step LoRA of a tiny
model trains deterministically, is reused, and loads under its registered name; every script knows it."""

from __future__ import annotations

import re
import runpy
import sys

import pytest
import torch

from multid.config import MODELS_DIR_ENV, REPO_ROOT
from multid.errors import MissingArtifactError, UserError
from multid.tasks import phrasings
from multid.finetune import train as ft
from multid.models import MODEL_NAMES, load_model, model_fingerprint
from multid.tasks.registry import TASKS


# ----------------------------------------------------------------------------------------- data


@pytest.mark.unit
@pytest.mark.parametrize("task", list(TASKS))
def test_training_data_never_contains_the_paper_prompts(task):
    spec = TASKS[task]
    examples = phrasings.training_examples(task)
    prompts = [example.prompt for example in examples]
    paper = {problem.prompt for problem in phrasings.paper_examples(task)}
    assert not paper & set(prompts)
    assert not any(prompt.startswith("Let's do some") or re.search(r" from \w+ is$", prompt) for prompt in prompts)
    # several phrasings, durations as words and digits and beyond p, answers (a + b) mod p
    assert len({example.phrasing for example in examples}) == len(phrasings.TRAIN_PHRASINGS[task]) >= 4
    assert any(f" {4 * spec.p} " in prompt for prompt in prompts)
    assert any(" twenty-" in prompt for prompt in prompts) and any(" Three " in prompt for prompt in prompts)
    for example in examples[:: max(1, len(examples) // 50)]:
        a, b, c = example.info
        assert example.answer == spec.start_words[(a + b) % spec.p] and c == (a + b) % spec.p
    # the held-out phrasing is a test template only
    held = phrasings.held_out_examples(task)
    assert phrasings.HELD_OUT[task] not in phrasings.TRAIN_PHRASINGS[task]
    assert not {example.prompt for example in held} & set(prompts)
    assert [example.info for example in held] == [example.info for example in phrasings.paper_examples(task)]


@pytest.mark.unit
@pytest.mark.parametrize("prompt, why", [
    ("Let's do some days of the week math. Three days from Monday is", "is one of the paper's test prompts"),
    ("Let's do some calendar math. Two months from May is", "is one of the paper's test prompts"),
    ("Let's do some days of the week math. What comes after Monday?", "starts like the paper's template"),
    ("let's do some calendar math: 14 months after May is", "starts like the paper's template"),
    ("Quick: 23 days from Friday is", "ends like the paper's template"),
    ("Now, nineteen months from August is", "ends like the paper's template"),
])
def test_the_template_check_rejects_paper_prompts(prompt, why):
    with pytest.raises(UserError, match=why):
        phrasings.check_no_paper_prompts(["Today is Monday. In 3 days it will be", prompt])


@pytest.mark.unit
def test_the_template_check_guards_the_training_set(monkeypatch):
    monkeypatch.setitem(phrasings.TRAIN_PHRASINGS, "days_of_week",
                        (*phrasings.TRAIN_PHRASINGS["days_of_week"], "Let's do some days of the week math. {n} {unit} from {start} is"))
    with pytest.raises(UserError, match="paper"):
        phrasings.training_examples("days_of_week")


@pytest.mark.unit
def test_number_words():
    assert [phrasings.write_duration(n, style) for n, style in [(3, "Word"), (21, "word"), (40, "word"), (12, "digits")]] == [
        "Three", "twenty-one", "forty", "12"]


# ----------------------------------------------------------------------------------------- training


@pytest.fixture
def tiny_arith(tmp_path, monkeypatch):
    """A 3-step fine-tune of the tiny model in a fresh base dir (its own models dir)."""
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    settings = ft.FinetuneSettings(steps=3, batch_size=4, rank=4, alpha=8, max_multiple=2)
    folder, report = ft.finetune("tiny-arith", tmp_path, settings, progress=False)
    return tmp_path, settings, folder, report


@pytest.mark.integration
def test_tiny_finetune_trains_saves_and_is_reused(tiny_arith, monkeypatch):
    base_dir, settings, folder, report = tiny_arith
    assert folder == base_dir / "models" / "tiny-arith"
    assert {"config.json", "model.safetensors", "tokenizer.json", "finetune.json", "stage.json"} <= {p.name for p in folder.iterdir()}
    assert report["settings"]["steps"] == 3 and report["settings"]["seed"] == 0
    for before_after in ("accuracy_before", "accuracy_after"):
        assert report[before_after]["days_of_week"]["paper"]["total"] == 49
        assert report[before_after]["months_of_year"]["held_out"]["total"] == 144
    assert len(report["losses"]) == 3 and all(0 < loss < 10 for loss in report["losses"])
    # a second run with the same settings reuses the folder without training
    monkeypatch.setattr(ft, "build_finetuned", lambda *args, **kwargs: pytest.fail("retrained a current model"))
    again, _ = ft.finetune("tiny-arith", base_dir, settings, progress=False)
    assert again == folder


@pytest.mark.integration
def test_tiny_finetune_is_deterministic(tiny_arith, tmp_path_factory, monkeypatch):
    from safetensors.torch import load_file

    base_dir, settings, folder, _ = tiny_arith
    other = tmp_path_factory.mktemp("again")
    monkeypatch.setenv(MODELS_DIR_ENV, str(other / "models"))
    torch.manual_seed(12345)  # the caller's random state must not matter
    second, _ = ft.finetune("tiny-arith", other, settings, progress=False)
    first_weights, second_weights = load_file(folder / "model.safetensors"), load_file(second / "model.safetensors")
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[key], second_weights[key]) for key in first_weights)
    untrained, _ = ft.build_tiny_hf()
    assert not torch.equal(untrained.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                           first_weights["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.integration
def test_saved_folder_loads_under_the_registered_name(tiny_arith):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, _, folder, _ = tiny_arith
    model = load_model("tiny-arith", base_dir=base_dir)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = phrasings.paper_examples("days_of_week")[0].prompt
    ids = ft.hf_tokenize(tokenizer)(prompt)
    assert model.to_tokens(prompt)[0].tolist() == ids  # training saw what TransformerLens sees
    with torch.no_grad():
        ours, theirs = model(torch.tensor([ids]))[0, -1], hf(torch.tensor([ids])).logits[0, -1]
    # TransformerLens centres the unembedding: logits agree up to a constant
    assert torch.allclose(ours - ours.mean(), theirs - theirs.mean(), atol=1e-4)
    fingerprint = model_fingerprint("tiny-arith", base_dir=base_dir)
    assert fingerprint["weights"] and fingerprint["weights"][0][0] == "model.safetensors"


@pytest.mark.integration
def test_a_missing_finetune_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    with pytest.raises(MissingArtifactError, match="python3 intervention/finetune_arithmetic.py --model smollm2-arith"):
        load_model("smollm2-arith", base_dir=tmp_path)
    assert model_fingerprint("smollm2-arith", base_dir=tmp_path)["weights"] is None


@pytest.mark.unit
def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="--lr must be between 0 and 1, got 2"):
        ft.FinetuneSettings(steps=3, lr=2.0).check()
    with pytest.raises(UserError, match="unknown fine-tuned model 'smollm2'"):
        ft.default_settings("smollm2")


# ----------------------------------------------------------------------------------------- every script


def main_scripts() -> list[str]:
    """Every file with a __main__ block (the user-facing scripts)."""
    found = []
    for folder in ("intervention", "reducibility_demos", "feature_deconstruction", "sae_multid_feature_discovery", "multid"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if 'if __name__ == "__main__":' in path.read_text():
                found.append(str(path.relative_to(REPO_ROOT)))
    return found


@pytest.mark.acceptance
def test_every_script_that_lists_models_lists_smollm2_arith(capsys, monkeypatch):
    listing = []
    for script in main_scripts():
        monkeypatch.setattr(sys, "argv", [script, "--help"])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
        assert exit_info.value.code == 0, script
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        if "model name: mistral, llama" in out:  # the help enumerates the registry (add_model_args)
            assert "smollm2-arith" in out and "tiny-arith" in out, f"{script} --help does not list smollm2-arith"
            listing.append(script)
    assert {"intervention/days_of_week_task.py", "intervention/months_of_year_task.py",
            "intervention/circle_probe_interventions.py", "intervention/activation_patching.py"} <= set(listing)
    assert {"smollm2-arith", "tiny-arith"} <= set(MODEL_NAMES)
