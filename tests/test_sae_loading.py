"""SAE loading (multid.sae.data.sae_loading): SAELens disk and hub paths, the paper's Mistral .pt format and its norm
rescaling, the restricted unpickler, decoder files, and the errors for bad input."""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from multid.errors import UserError
from multid.sae.data import sae_loading
from multid.sae.data.sae_loading import (PAPER_PT_NAME, PAPER_PT_TAG, check_sae_fits_model, load_decoder, load_decoder_file,
                                load_paper_pt, load_sae, resolve_sae_source, sae_tag)
from tests.sae_helpers import TINY_HOOK, make_tiny_sae, write_mistral_style_pt


def manual_standard(x, state):
    """SAELens 'standard' encoding written out: ReLU((x - b_dec) W_enc + b_enc)."""
    return torch.relu((x - state["b_dec"]) @ state["W_enc"] + state["b_enc"])


def manual_paper(x, state):
    """The paper's Mistral SAE written out: s = x sqrt(d)/||x||, f = ReLU(s W_enc + b_enc), y = (f W_dec + b_dec)/c."""
    d = x.shape[-1]
    c = math.sqrt(d) / x.norm(dim=-1, keepdim=True)
    f = torch.relu((c * x) @ state["W_enc"] + state["b_enc"])
    return f, (f @ state["W_dec"] + state["b_dec"]) / c


def disk_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "sae_weights.safetensors"))


# ----------------------------------------------------------------------------------------- SAELens disk


@pytest.mark.integration
def test_saelens_disk_round_trip(tmp_path):
    folder = make_tiny_sae(tmp_path / "sae", d_sae=48, seed=3)
    sae = load_sae("tiny", 1, sae_path=folder)
    state = disk_state(folder)
    assert (sae.hook_name, sae.d_in, sae.d_sae, sae.input_scaling, sae.tag) == (TINY_HOOK, 64, 48, "none", "sae")
    torch.testing.assert_close(sae.W_dec, state["W_dec"], rtol=0, atol=0)
    x = torch.randn(20, 64, generator=torch.Generator().manual_seed(0))
    acts = sae.encode(x)
    torch.testing.assert_close(acts, manual_standard(x, state), rtol=1e-5, atol=1e-6)
    assert 0 < (acts > 0).float().mean() < 1  # some features fire, not all: the bias matters
    torch.testing.assert_close(sae.reconstruct(x), acts @ state["W_dec"] + state["b_dec"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(load_decoder("tiny", 1, sae_path=folder), state["W_dec"].numpy())


@pytest.mark.integration
def test_saelens_constant_norm_rescale_done_by_us(tmp_path):
    """A SAELens SAE whose config asks for constant_norm_rescale: same formula as the paper's .pt (with SAELens'
    b_dec subtraction, since apply_b_dec_to_input is on here), stateless and scale invariant."""
    folder = make_tiny_sae(tmp_path / "normed", d_sae=40, seed=1, normalize="constant_norm_rescale")
    sae = load_sae("tiny", 1, sae_path=folder)
    assert sae.input_scaling == "norm_sqrt_d"
    state = disk_state(folder)
    x = torch.randn(10, 64, generator=torch.Generator().manual_seed(1)) * 50
    c = 8.0 / x.norm(dim=-1, keepdim=True)
    expected = manual_standard(c * x, state)
    torch.testing.assert_close(sae.encode(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.encode(0.01 * x), expected, rtol=1e-4, atol=1e-5)
    assert not hasattr(sae.module, "x_norm_coeff")  # SAELens' own (stateful) rescaling is switched off
    torch.testing.assert_close(sae.reconstruct(x), (expected @ state["W_dec"] + state["b_dec"]) / c, rtol=1e-4,
                               atol=1e-4)
    # SAELens' own rescaling (stateful) gives the same activations on a fresh copy
    from sae_lens import SAE

    torch.testing.assert_close(SAE.load_from_disk(str(folder)).encode(x).detach(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.integration
def test_copied_hub_folder_of_the_paper_mistral_export_is_rescaled(tmp_path, capsys):
    """The mistral-7b-res-wg folders say normalize_activations "none" but need norm-sqrt(d) inputs."""
    import json

    folder = make_tiny_sae(tmp_path / "mistral_7b_layer_8", d_sae=24, hook="blocks.8.hook_resid_pre")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = False
    cfg["metadata"].update(model_name="mistral-7b", dataset_path="monology/pile-uncopyrighted")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae("mistral", 8, sae_path=folder)
    assert sae.input_scaling == "norm_sqrt_d" and "paper's Mistral SAE export" in capsys.readouterr().err
    state = disk_state(folder)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(4)) * 30
    f, recon = manual_paper(x, state)
    torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.reconstruct(x), recon, rtol=1e-4, atol=1e-4)
    plain = load_sae("mistral", 8, sae_path=folder, input_scaling="none")
    assert plain.input_scaling == "none"
    torch.testing.assert_close(plain.encode(x), torch.relu(x @ state["W_enc"] + state["b_enc"]), rtol=1e-5, atol=1e-4)
    other = make_tiny_sae(tmp_path / "plain", d_sae=24)  # a SAE for another model keeps its own setting
    assert load_sae("tiny", 1, sae_path=other).input_scaling == "none"
    assert load_sae("tiny", 1, sae_path=other, input_scaling="norm_sqrt_d").input_scaling == "norm_sqrt_d"
    with pytest.raises(UserError, match="--sae_input_scaling 'l2' is not one of auto, none, norm_sqrt_d"):
        load_sae("tiny", 1, sae_path=other, input_scaling="l2")


@pytest.mark.unit
def test_sae_path_layer_template_and_tags(tmp_path):
    make_tiny_sae(tmp_path / "layer_1", d_sae=16)
    sae = load_sae("tiny", 1, sae_path=str(tmp_path / "layer_{layer}"))
    assert sae.tag == "layer_1" == sae_tag("tiny", 1, sae_path=str(tmp_path / "layer_{layer}"))
    with pytest.raises(UserError, match=r"reads blocks\.1\.hook_resid_pre \(layer 1\), not layer 2"):
        load_sae("tiny", 2, sae_path=tmp_path / "layer_1")
    with pytest.raises(UserError, match="does not exist"):
        load_sae("tiny", 2, sae_path=str(tmp_path / "layer_{layer}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no cfg.json"):
        load_sae("tiny", 1, sae_path=tmp_path / "empty")
    assert sae_tag("gpt-2", 7) == "gpt2-small-res-jb"
    assert resolve_sae_source("gpt2", 7).sae_id == "blocks.7.hook_resid_pre"


@pytest.mark.unit
def test_disk_sae_for_smollm2(tmp_path):
    folder = make_tiny_sae(tmp_path / "smollm2_l9", d_in=576, d_sae=32, hook="blocks.9.hook_resid_pre")
    sae = load_sae("smollm2", 9, sae_path=folder)
    assert (sae.d_in, sae.d_sae, sae.hook_name, sae.tag) == (576, 32, "blocks.9.hook_resid_pre", "smollm2_l9")
    x = torch.randn(4, 576, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sae.encode(x), manual_standard(x, disk_state(folder)), rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_sae_width_differs_from_model(tmp_path, tiny_model):
    sae = load_sae("tiny", 1, sae_path=make_tiny_sae(tmp_path / "narrow", d_in=32, d_sae=16))
    with pytest.raises(UserError, match=r"reads 32-dim inputs but model 'tiny' has 64-dim activations"):
        check_sae_fits_model(sae, tiny_model, "tiny")
    with pytest.raises(UserError, match=r"32-dim inputs at blocks\.1\.hook_resid_pre, but the activations there "
                                        r"are 64-dim"):
        sae.encode(torch.zeros(3, 64))
    far = load_sae("tiny", 7, sae_path=make_tiny_sae(tmp_path / "deep", hook="blocks.7.hook_resid_pre", d_sae=8))
    with pytest.raises(UserError, match="which model 'tiny' does not have"):
        check_sae_fits_model(far, tiny_model, "tiny")


# ----------------------------------------------------------------------------------------- the paper's .pt


@pytest.mark.unit
def test_paper_pt_round_trip_and_norm_rescaling(tmp_path):
    state = write_mistral_style_pt(tmp_path / "mistral.pt", d_in=32, d_sae=80, seed=2)
    sae = load_sae("mistral", 8, sae_path=tmp_path / "mistral.pt")
    assert (sae.hook_name, sae.d_in, sae.d_sae, sae.input_scaling, sae.tag) == (
        "blocks.8.hook_resid_pre", 32, 80, "norm_sqrt_d", "mistral")
    torch.testing.assert_close(sae.W_dec, state["W_dec"], rtol=0, atol=0)
    x = torch.randn(50, 32, generator=torch.Generator().manual_seed(5)) * 7
    f, recon = manual_paper(x, state)
    acts = sae.encode(x)
    torch.testing.assert_close(acts, f, rtol=1e-5, atol=1e-6)
    assert 0.05 < (acts > 0).float().mean() < 0.95
    # b_dec is NOT subtracted before encoding (it is nonzero, so this would differ)
    c = math.sqrt(32) / x.norm(dim=-1, keepdim=True)
    assert (torch.relu((c * x - state["b_dec"]) @ state["W_enc"] + state["b_enc"]) - acts).abs().max() > 1e-3
    for k in (1e-3, 0.5, 3.0, 1e4):  # encode(k x) == encode(x) for k > 0; reconstructions scale back with k
        torch.testing.assert_close(sae.encode(k * x), acts, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sae.reconstruct(k * x), k * recon, rtol=1e-4, atol=1e-4 * k)
    torch.testing.assert_close(sae.reconstruct(x), recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode(acts, sae.input_scale(x)), recon, rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_paper_pt_config_becomes_attribute_bag(tmp_path):
    write_mistral_style_pt(tmp_path / "a.pt", d_in=16, d_sae=32, hook="blocks.16.hook_resid_pre")
    cfg, state = load_paper_pt(tmp_path / "a.pt")
    assert isinstance(cfg, sae_loading.AttrBag) and type(cfg).__name__ == "PaperSAEConfig"
    assert (cfg.d_in, cfg.hook_point, cfg.tags) == (16, "blocks.16.hook_resid_pre", ("a", "b"))
    assert "tests.sae_helpers.PaperSAEConfig" in repr(cfg)
    assert sorted(state) == ["W_dec", "W_enc", "b_dec", "b_enc"]
    assert load_sae("mistral", 16, sae_path=tmp_path / "a.pt").hook_name == "blocks.16.hook_resid_pre"


class _RunsCommand:
    def __init__(self, target: str, marker: Path):
        self.target, self.marker = target, marker

    def __reduce__(self):
        if self.target == "system":
            return (os.system, (f"touch {self.marker}",))
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.unit
@pytest.mark.parametrize("target", ["system", "eval"])
def test_paper_pt_with_code_is_refused(tmp_path, target):
    marker = tmp_path / "executed"
    state = write_mistral_style_pt(tmp_path / "ok.pt", d_in=8, d_sae=16)
    buffer = io.BytesIO()
    torch.save({"cfg": _RunsCommand(target, marker), "state_dict": state}, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    expected = "posix.system" if target == "system" else "builtins.eval"
    with pytest.raises(UserError, match=rf"refusing to load .*evil\.pt: refusing to load {expected}"):
        load_sae("mistral", 8, sae_path=tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(UserError):  # and the refusal does not depend on the wrapper dict
        sae_loading.load_paper_pt(tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        sae_loading.RestrictedUnpickler(io.BytesIO(pickle.dumps(_RunsCommand(target, marker)))).load()
    assert not marker.exists()


@pytest.mark.unit
def test_paper_pt_bad_content(tmp_path):
    state = write_mistral_style_pt(tmp_path / "ok.pt", d_in=8, d_sae=16)
    torch.save({"cfg": None, "state_dict": {k: v for k, v in state.items() if k != "W_dec"}}, tmp_path / "nodec.pt")
    with pytest.raises(UserError, match="lacks tensor.*W_dec"):
        load_sae("mistral", 8, sae_path=tmp_path / "nodec.pt")
    torch.save({"cfg": None, "state_dict": {**state, "W_dec": state["W_dec"][:, :4]}}, tmp_path / "shape.pt")
    with pytest.raises(UserError, match="inconsistent SAE shapes"):
        load_sae("mistral", 8, sae_path=tmp_path / "shape.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read .*junk.pt"):
        load_sae("mistral", 8, sae_path=tmp_path / "junk.pt")


@pytest.mark.unit
def test_paper_pt_found_where_the_readme_puts_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_sae_source("mistral", 8).kind == "hub"
    assert resolve_sae_source("mistral", 8).location == "mistral-7b-res-wg"
    target = tmp_path / "saes" / "mistral_saes" / PAPER_PT_NAME.format(layer=8)
    write_mistral_style_pt(target, d_in=16, d_sae=32)
    source = resolve_sae_source("mistral", 8)
    assert (source.kind, source.tag, Path(source.location)) == ("pt", PAPER_PT_TAG, target)
    assert load_sae("mistral", 8).input_scaling == "norm_sqrt_d"
    assert resolve_sae_source("mistral", 16).kind == "hub"


# ----------------------------------------------------------------------------------------- hub (no network)


class _FakeSaeLensSAE(torch.nn.Module):
    """Enough of a SAELens SAE for wrap_sae_lens: cfg.metadata.hook_name, normalize_activations, encode."""

    def __init__(self, d_in=16, d_sae=24, hook="blocks.8.hook_resid_pre", normalize="none"):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.W_enc = torch.nn.Parameter(torch.randn(d_in, d_sae, generator=gen))
        self.b_enc = torch.nn.Parameter(torch.full((d_sae,), -0.5))
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in, generator=gen))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        meta = type("Meta", (), {"hook_name": hook})()
        self.cfg = type("Cfg", (), {"metadata": meta, "normalize_activations": normalize})()

    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)


@pytest.mark.unit
@pytest.mark.parametrize("as_tuple", [False, True])
def test_hub_load_current_and_old_return_types(monkeypatch, as_tuple):
    from sae_lens import SAE

    calls = []

    def fake(*, release, sae_id, device):
        calls.append((release, sae_id, device))
        fake_sae = _FakeSaeLensSAE(hook=sae_id)
        return (fake_sae, {}, None) if as_tuple else fake_sae

    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(fake))
    gpt2 = load_sae("gpt-2", 7)
    assert calls[-1] == ("gpt2-small-res-jb", "blocks.7.hook_resid_pre", "cpu")
    assert (gpt2.input_scaling, gpt2.tag, gpt2.hook_name) == ("none", "gpt2-small-res-jb", "blocks.7.hook_resid_pre")
    mistral = load_sae("mistral", 8)
    assert calls[-1][:2] == ("mistral-7b-res-wg", "blocks.8.hook_resid_pre")
    assert mistral.input_scaling == "norm_sqrt_d"  # the release's SAEs expect norm-sqrt(d) inputs; we rescale
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(mistral.encode(x), mistral.encode(100 * x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mistral.encode(x), mistral.module.encode(4.0 * x / x.norm(dim=-1, keepdim=True)))


@pytest.mark.unit
def test_hub_offline_is_one_clear_error(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError
    from sae_lens import SAE

    def offline(**_kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(offline))
    with pytest.raises(UserError, match=r"could not download the SAE gpt2-small-res-jb / blocks\.7\.hook_resid_pre "
                                        r"from the Hugging Face hub \(LocalEntryNotFoundError; hub repo "
                                        r"jbloom/GPT2-Small-SAEs-Reformatted/blocks\.7\.hook_resid_pre\).*pass "
                                        r"--sae_path"):
        load_sae("gpt-2", 7)
    with pytest.raises(UserError, match=r"hub repo JoshEngels/Mistral-7B-Residual-Stream-SAEs/mistral_7b_layer_8"):
        load_sae("mistral", 8)
    with pytest.raises(UserError, match=r"mistral-7b-res-wg has no SAE 'blocks\.9\.hook_resid_pre'; its resid_pre "
                                        r"layers are 8, 16, 24"):
        load_sae("mistral", 9)
    with pytest.raises(UserError, match=r"model 'smollm2' has no default SAE release .*--sae_path"):
        load_sae("smollm2", 3)


# ----------------------------------------------------------------------------------------- decoder files


@pytest.mark.unit
def test_decoder_files(tmp_path):
    W = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    np.save(tmp_path / "W.npy", W)
    np.savez(tmp_path / "W.npz", W_dec=W.astype(np.float64))
    np.testing.assert_array_equal(load_decoder_file(tmp_path / "W.npy"), W)
    np.testing.assert_array_equal(load_decoder(decoder_file=tmp_path / "W.npz"), W)
    np.savez(tmp_path / "other.npz", weights=W)
    with pytest.raises(UserError, match="has keys weights; expected W_dec"):
        load_decoder_file(tmp_path / "other.npz")
    np.save(tmp_path / "flat.npy", W.ravel())
    with pytest.raises(UserError, match=r"shape \(60,\); expected a 2-D float matrix"):
        load_decoder_file(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="cannot read"):
        load_decoder_file(tmp_path / "obj.npy")
    with pytest.raises(UserError, match="does not exist"):
        load_decoder_file(tmp_path / "missing.npy")


@pytest.mark.integration
def test_a_damaged_safetensors_file_is_one_clear_error(tmp_path):
    from multid.errors import UserError
    from tests.sae_helpers import make_tiny_sae

    folder = make_tiny_sae(tmp_path / "sae")
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # cut short, as an interrupted copy leaves it
    with pytest.raises(UserError, match=r"cannot load the SAELens SAE in .*sae \(SafetensorError: .*damaged or incomplete"):
        load_sae("tiny", 1, sae_path=folder)
