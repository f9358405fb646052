"""Model registry: the real loading paths (hub via a fake cache, local folders, embedded SmolLM2) and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from multid.config import REPO_ROOT, resolve_base_dir, resolve_device
from multid.errors import UserError
from multid.models import build_tiny_tokenizer, get_spec, load_model

RUN_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}


def centred(logits: torch.Tensor) -> torch.Tensor:
    """Logits minus their mean over the vocabulary (TransformerLens' center_unembed removes it)."""
    return logits - logits.mean(dim=-1, keepdim=True)


def test_unknown_model_name():
    with pytest.raises(UserError, match="unknown model 'mistral7b'.*smollm2"):
        get_spec("mistral7b")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_device_without_gpu_suggests_cpu():
    for value in ("0", 0, "cuda", "cuda:1"):
        with pytest.raises(UserError, match="--device cpu"):
            resolve_device(value)
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") == "cpu"
    with pytest.raises(UserError, match="not a device"):
        resolve_device("gpu")


def test_unwritable_base_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        resolve_base_dir(blocker / "base")


def test_model_path_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model("mistral", model_path=tmp_path / "missing")
    with pytest.raises(UserError, match="no config.json"):
        load_model("mistral", model_path=tmp_path)
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(UserError, match="needs MistralForCausalLM"):
        load_model("mistral", model_path=tmp_path)


def save_tiny_llama(folder) -> "torch.nn.Module":
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_local_llama_folder_with_llama_in_its_path(tmp_path):
    """--model_path: TransformerLens' own conversion, also for folder names containing "llama"."""
    folder = tmp_path / "my-llama-3-copy"
    hf_model = save_tiny_llama(folder)
    model = load_model("llama", model_path=folder)
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 64
    tokens = model.to_tokens("Two days from Monday is")
    with torch.no_grad():
        torch.testing.assert_close(centred(model(tokens)), centred(hf_model(tokens).logits), rtol=0, atol=1e-4)


FAKE_HUB_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    hf_home = sys.argv[1]
    os.environ["HF_HOME"] = hf_home
    from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM
    from multid.models import build_tiny_tokenizer

    def fake_snapshot(repo):
        snap = os.path.join(hf_home, "hub", f"models--{repo.replace('/', '--')}", "snapshots", "0" * 40)
        os.makedirs(snap)
        refs = os.path.join(hf_home, "hub", f"models--{repo.replace('/', '--')}", "refs")
        os.makedirs(refs)
        open(os.path.join(refs, "main"), "w").write("0" * 40)
        return snap

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=64, n_ctx=64,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()
    snap = fake_snapshot("gpt2"); gpt2.save_pretrained(snap); tok.save_pretrained(snap)
    mistral = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               max_position_embeddings=64, sliding_window=None,
                                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()
    snap = fake_snapshot("mistralai/Mistral-7B-v0.1"); mistral.save_pretrained(snap); tok.save_pretrained(snap)

    from multid.models import load_model
    for name, hf in (("gpt2", gpt2), ("mistral", mistral)):
        model = load_model(name)  # the unmodified HookedTransformer.from_pretrained hub call
        tokens = model.to_tokens("Two days from Monday is")
        with torch.no_grad():
            a, b = model(tokens), hf(tokens).logits
        diff = ((a - a.mean(-1, keepdim=True)) - (b - b.mean(-1, keepdim=True))).abs().max().item()
        print(name, model.cfg.n_layers, model.cfg.d_model, f"{diff:.2e}")
        assert diff < 1e-4, diff

    # The task script runs end to end on the hub path too.
    from multid.tasks.build import main
    main("days_of_week", ["--model", "mistral", "--device", "cpu", "--base_dir", os.path.join(hf_home, "base"), "--pca_k", "3"])
    """
)


def test_hub_from_pretrained_path_with_a_fake_hf_cache(tmp_path):
    """The code users run (`HookedTransformer.from_pretrained("gpt2" / "mistral-7b")`) on tiny stand-ins."""
    script = tmp_path / "fake_hub.py"
    script.write_text(FAKE_HUB_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "hf")], env=RUN_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gpt2 2 64" in done.stdout and "mistral 2 64" in done.stdout
    assert "mistral days_of_week:" in done.stdout and (tmp_path / "hf" / "base" / "mistral_days_of_week" / "results.csv").exists()


def test_hub_load_without_weights_says_what_to_do(tmp_path):
    """Offline and no hub copy: the task script ends with one line that points to --model_path."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "intervention" / "days_of_week_task.py"), "--model", "gpt2", "--device", "cpu",
         "--base_dir", str(tmp_path / "base")],
        env={**RUN_ENV, "HF_HOME": str(tmp_path / "empty")}, capture_output=True, text=True, timeout=300,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(errors) == 1 and "--model_path" in errors[0] and "gpt2" in errors[0]


@pytest.mark.smollm2
def test_smollm2_matches_transformers(smollm2_model):
    from transformers import AutoModelForCausalLM

    from multid.config import models_dir
    from multid.models import SMOLLM2_FOLDER

    folder = models_dir(resolve_base_dir(None, create=False)) / SMOLLM2_FOLDER
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    answers = []
    for prompt in ("Let's do some days of the week math. Two days from Monday is",
                   "Let's do some calendar math. Two months from January is"):
        tokens = smollm2_model.to_tokens(prompt)
        with torch.no_grad():
            ours, theirs = smollm2_model(tokens), hf_model(tokens).logits
        torch.testing.assert_close(centred(ours), centred(theirs), rtol=0, atol=1e-3)
        answers.append(smollm2_model.to_string([int(ours[0, -1].argmax())]))
    # A real pretrained model: it answers with a weekday and a month (right or wrong: it is weak at arithmetic).
    assert answers[0] in {" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"}
    assert answers[1] in {" January", " February", " March", " April", " May", " June"}
