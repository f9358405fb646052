"""Load the sparse autoencoders of the paper (section 4.1) and any SAELens SAE saved on disk.

Sources (`resolve_sae_source` decides, without loading anything):
- GPT-2 small, layer L: SAELens release `gpt2-small-res-jb`, sae_id `blocks.L.hook_resid_pre` (hub download).
- Mistral-7B, layer L: the paper's own `.pt` file when it sits where the upstream README puts it
  (`sae_multid_feature_discovery/saes/mistral_saes/Mistral-7B-v0.1_blocks.L.hook_resid_pre_65536_final.pt`),
  else SAELens release `mistral-7b-res-wg` (the same SAEs exported by the paper's authors; layers 8, 16, 24).
- `--sae_path`: a SAELens folder (cfg.json + sae_weights.safetensors, as `SAE.save_model` writes it) for any
  registered model (smollm2, tiny, ...), or a `.pt` file in the paper's format. `{layer}` in the path is
  replaced by the layer, so one template serves several layers.

Input scaling: the paper's Mistral SAEs were trained on residuals rescaled to norm sqrt(d). Their forward
pass is s = x * sqrt(d)/||x||, f = ReLU(s W_enc + b_enc) (no b_dec subtraction), y = f W_dec + b_dec, and the
reconstruction y / (sqrt(d)/||x||). We apply that scaling ourselves for the `.pt` files, for the
`mistral-7b-res-wg` release and for any SAELens SAE whose config says `constant_norm_rescale`, and switch
SAELens' own (stateful) rescaling off, so `encode` is a pure function. Feature activations therefore live in
the norm-sqrt(d) space for those SAEs (as in the paper); `LoadedSAE.input_scaling` says which case applies.

The paper's `.pt` files pickle their training-config object; we read them on the CPU with a restricted
unpickler (`load_paper_pt`) that rebuilds tensors, maps any config class to a plain attribute bag, and refuses
everything else (functions, system modules), so no code from the file can run.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from multid.config import REPO_ROOT
from multid.errors import UserError
from multid.sae.data.run_layout import canonical_model

GPT2_RELEASE = "gpt2-small-res-jb"
MISTRAL_RELEASE = "mistral-7b-res-wg"
DEFAULT_RELEASES = {"gpt2": GPT2_RELEASE, "mistral": MISTRAL_RELEASE}
NORM_RESCALED_RELEASES = frozenset({MISTRAL_RELEASE})  # trained on inputs rescaled to norm sqrt(d)
PAPER_PT_TAG = "mistral-paper-pt"
PAPER_PT_NAME = "Mistral-7B-v0.1_blocks.{layer}.hook_resid_pre_65536_final.pt"
PAPER_PT_DIRS = ("saes/mistral_saes", "sae_multid_feature_discovery/saes/mistral_saes")
PT_SUFFIXES = (".pt", ".pth")
INPUT_SCALINGS = ("none", "norm_sqrt_d", "layer_norm")


# ----------------------------------------------------------------------------------------- the SAE


@dataclass
class LoadedSAE:
    """One SAE with a stateless encode, whatever its source (see module docstring).

    W_dec [F, d] and b_dec [d] are the SAE's own tensors (rows not renormalised). `encode(x)` returns the
    feature activations of residuals x [n, d] in the SAE's input space (norm-sqrt(d) space when
    input_scaling == "norm_sqrt_d"); `decode(acts, scale)` maps activations back, dividing by `scale`
    (from `input_scale(x)`) when given; `reconstruct(x)` is decode(encode(x)) in x's own space.
    """

    W_dec: Any = field(repr=False)
    b_dec: Any = field(repr=False)
    hook_name: str
    input_scaling: str
    tag: str
    source: str
    encode_scaled: Callable[[Any], Any] = field(repr=False)
    module: Any = field(default=None, repr=False)  # the SAELens SAE, when loaded through SAELens
    _sha1: str | None = field(default=None, repr=False)

    @property
    def d_in(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def d_sae(self) -> int:
        return int(self.W_dec.shape[0])

    @property
    def device(self):
        return self.W_dec.device

    def input_scale(self, x):
        """Per-row factor c = sqrt(d)/||x|| ([n, 1]) for norm-rescaled SAEs, else None."""
        if self.input_scaling != "norm_sqrt_d":
            return None
        norms = x.norm(dim=-1, keepdim=True)
        return (self.d_in ** 0.5) / norms.clamp_min(1e-30)

    def encode(self, x):
        """Feature activations [n, F] (float32) of residuals x [n, d]."""
        import torch

        if x.shape[-1] != self.d_in:
            raise UserError(f"the SAE ({self.tag}) reads {self.d_in}-dim inputs at {self.hook_name}, but the "
                            f"activations there are {x.shape[-1]}-dim; pick the SAE made for this model")
        x = x.to(device=self.W_dec.device, dtype=self.W_dec.dtype)
        scale = self.input_scale(x)
        with torch.no_grad():
            return self.encode_scaled(x * scale if scale is not None else x)

    def decode(self, acts, scale=None):
        """acts W_dec + b_dec, divided by `scale` (per row) when given."""
        y = acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return y / scale if scale is not None else y

    def reconstruct(self, x):
        """The SAE's reconstruction of x, in x's own space."""
        import torch

        with torch.no_grad():
            if self.input_scaling == "layer_norm":
                return self.module.decode(self.module.encode(x.to(self.W_dec.dtype)))
            x = x.to(device=self.W_dec.device, dtype=self.W_dec.dtype)
            return self.decode(self.encode(x), self.input_scale(x))

    def decoder_numpy(self) -> np.ndarray:
        """W_dec as a float32 numpy array [F, d]."""
        return self.W_dec.detach().to("cpu", dtype=self._float32()).numpy()

    def _float32(self):
        import torch

        return torch.float32

    def decoder_sha1(self) -> str:
        """Hash of W_dec's float32 bytes: identifies the SAE whatever file or folder it came from."""
        if self._sha1 is None:
            self._sha1 = hashlib.sha1(np.ascontiguousarray(self.decoder_numpy()).data).hexdigest()
        return self._sha1

    def identity(self) -> dict[str, Any]:
        """What identifies this SAE in the settings of artifacts made with it (no local paths)."""
        return {"tag": self.tag, "hook": self.hook_name, "d_in": self.d_in, "d_sae": self.d_sae,
                "input_scaling": self.input_scaling, "W_dec_sha1": self.decoder_sha1()}


# ----------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class SaeSource:
    """Where an SAE comes from: kind "hub" (SAELens release + sae_id), "disk" (SAELens folder), "pt"."""

    kind: str
    location: str  # release name, or a path
    sae_id: str | None
    tag: str
    layer: int | None


def sanitize_tag(text: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return tag or "sae"


def paper_pt_default(layer: int) -> Path | None:
    """The paper's Mistral `.pt` for this layer if it is where the upstream README says to put it."""
    name = PAPER_PT_NAME.format(layer=layer)
    for root in (Path.cwd(), REPO_ROOT):
        for folder in PAPER_PT_DIRS:
            path = root / folder / name
            if path.is_file():
                return path
    return None


def resolve_sae_source(model: str, layer: int | None, *, sae_path: str | os.PathLike | None = None,
                       release: str | None = None) -> SaeSource:
    """Decide which SAE (model, layer) means, without loading it (cheap: used to name run folders)."""
    model = canonical_model(model)
    if sae_path is not None:
        text = str(sae_path)
        if "{layer}" in text:
            if layer is None:
                raise UserError(f"--sae_path {text} has a {{layer}} placeholder but no layer was given")
            text = text.replace("{layer}", str(layer))
        path = Path(text).expanduser()
        kind = "pt" if path.suffix.lower() in PT_SUFFIXES else "disk"
        name = path.stem if kind == "pt" else path.name
        return SaeSource(kind, str(path), None, sanitize_tag(name), layer)
    if release is None and model == "mistral" and layer is not None:
        found = paper_pt_default(layer)
        if found is not None:
            return SaeSource("pt", str(found), None, PAPER_PT_TAG, layer)
    release = release or DEFAULT_RELEASES.get(model)
    if release is None:
        known = ", ".join(f"{m} ({r})" for m, r in DEFAULT_RELEASES.items())
        raise UserError(f"model {model!r} has no default SAE release (only {known} do); pass --sae_path DIR with "
                        f"a SAELens SAE saved on disk (cfg.json + sae_weights.safetensors) for it")
    if layer is None:
        raise UserError(f"the SAELens release {release} needs a layer")
    return SaeSource("hub", release, f"blocks.{layer}.hook_resid_pre", sanitize_tag(release), layer)


def sae_tag(model: str, layer: int | None, *, sae_path: str | os.PathLike | None = None,
            release: str | None = None) -> str:
    """The short SAE name used in run folder names (`<model>_layer<L>_<tag>`)."""
    return resolve_sae_source(model, layer, sae_path=sae_path, release=release).tag


def layer_of_hook(hook: str | None) -> int | None:
    match = re.match(r"blocks\.(\d+)\.", hook or "")
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------- loading


def load_sae(model: str, layer: int | None, *, sae_path: str | os.PathLike | None = None,
             release: str | None = None, device: str = "cpu", input_scaling: str | None = None) -> LoadedSAE:
    """Load the SAE for (model, layer) from the source `resolve_sae_source` picks (see module docstring).

    input_scaling: None/"auto" (the source decides, see `auto_scaling`), or "none" / "norm_sqrt_d" to force it.
    A hub SAE that cannot be downloaded (offline) is a UserError that names the hub id and says to pass
    --sae_path. An SAE whose hook belongs to another layer than `layer` is a UserError.
    """
    if input_scaling not in (None, "auto", "none", "norm_sqrt_d"):
        raise UserError(f"--sae_input_scaling {input_scaling!r} is not one of auto, none, norm_sqrt_d")
    forced = None if input_scaling in (None, "auto") else input_scaling
    source = resolve_sae_source(model, layer, sae_path=sae_path, release=release)
    if source.kind == "hub":
        sae = load_hub_sae(source.location, source.sae_id or "", device, scaling=forced)
    elif source.kind == "pt":
        sae = load_paper_pt_sae(Path(source.location), device=device, tag=source.tag, layer=layer)
        if forced is not None:
            sae.input_scaling = forced
    else:
        sae = load_disk_sae(Path(source.location), device=device, tag=source.tag, scaling=forced)
    hook_layer = layer_of_hook(sae.hook_name)
    if layer is not None and hook_layer is not None and hook_layer != int(layer):
        raise UserError(f"the SAE at {source.location} reads {sae.hook_name} (layer {hook_layer}), not layer "
                        f"{layer}; pass the matching --layers or another --sae_path")
    return sae


PAPER_EXPORT_MODELS = ("mistral-7b", "mistralai/mistral-7b-v0.1")
PAPER_EXPORT_DATASET = "monology/pile-uncopyrighted"


def is_paper_mistral_export(sae: Any) -> bool:
    """True for the paper's Mistral SAEs as exported to SAELens format (mistral-7b-res-wg on the hub): their
    config names Mistral-7B and the Pile and says normalize_activations "none", yet they were trained on
    inputs rescaled to norm sqrt(d). A copy of that hub folder passed as --sae_path must be rescaled too."""
    meta = sae.cfg.metadata
    model = str(getattr(meta, "model_name", "") or "").lower()
    dataset = str(getattr(meta, "dataset_path", "") or "")
    norm = getattr(sae.cfg, "normalize_activations", "none") or "none"
    return model in PAPER_EXPORT_MODELS and dataset == PAPER_EXPORT_DATASET and norm == "none"


def wrap_sae_lens(sae: Any, *, tag: str, source: str, force_norm_rescale: bool = False,
                  scaling: str | None = None) -> LoadedSAE:
    """A SAELens SAE as a LoadedSAE; norm rescaling (constant_norm_rescale) done by us, SAELens' switched off.

    scaling: force "none" or "norm_sqrt_d" whatever the config says (None: decide from the config)."""
    hook = sae.cfg.metadata.hook_name
    if not hook:
        raise UserError(f"the SAE at {source} has no hook_name in its config; cannot tell where it reads")
    norm = getattr(sae.cfg, "normalize_activations", "none") or "none"
    if scaling is None:
        if force_norm_rescale or norm == "constant_norm_rescale":
            scaling = "norm_sqrt_d"
        elif norm in ("none", "expected_average_only_in"):  # the latter only matters while training
            scaling = "none"
        elif norm == "layer_norm":
            scaling = "layer_norm"
        else:
            raise UserError(f"the SAE at {source} uses normalize_activations={norm!r}, which is not supported here; "
                            f"supported: none, expected_average_only_in, constant_norm_rescale, layer_norm")
    if scaling in ("none", "norm_sqrt_d"):  # we scale (or not) ourselves; SAELens' stateful version is off
        sae.run_time_activation_norm_fn_in = _identity
        sae.run_time_activation_norm_fn_out = _identity
    sae.eval()
    return LoadedSAE(W_dec=sae.W_dec.detach(), b_dec=sae.b_dec.detach(), hook_name=hook, input_scaling=scaling,
                     tag=tag, source=source, encode_scaled=sae.encode, module=sae)


def _identity(x):
    return x


def is_offline_error(err: BaseException) -> bool:
    if isinstance(err, (OSError, ConnectionError, TimeoutError)):
        return True
    module = type(err).__module__ or ""
    return module.split(".")[0] in ("huggingface_hub", "requests", "httpx", "urllib3")


def load_hub_sae(release: str, sae_id: str, device: str = "cpu", scaling: str | None = None) -> LoadedSAE:
    """SAELens `SAE.from_pretrained` as a user with internet runs it (SAELens >= 6 returns the SAE alone;
    older versions a tuple whose first element is the SAE)."""
    from sae_lens import SAE

    check_release(release, sae_id)
    try:
        loaded = SAE.from_pretrained(release=release, sae_id=sae_id, device=device)
    except Exception as err:  # noqa: BLE001 - turned into one clear line below
        if is_offline_error(err):
            raise UserError(
                f"could not download the SAE {release} / {sae_id} from the Hugging Face hub "
                f"({type(err).__name__}; hub repo {hub_location(release, sae_id)}); without internet pass "
                f"--sae_path DIR (a SAELens SAE saved on disk: cfg.json + sae_weights.safetensors, e.g. that hub "
                f"folder copied from a machine with internet) or --sae_path FILE.pt (the paper's Mistral format)"
            ) from None
        raise
    sae = loaded[0] if isinstance(loaded, tuple) else loaded
    return wrap_sae_lens(sae, tag=sanitize_tag(release), source=f"sae_lens:{release}/{sae_id}",
                         force_norm_rescale=release in NORM_RESCALED_RELEASES, scaling=scaling)


def hub_location(release: str, sae_id: str) -> str:
    """'repo_id/folder' of a SAELens release's SAE on the hub (from SAELens' own table; no network)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory().get(release)
    if entry is None:
        return release
    return f"{entry.repo_id}/{entry.saes_map.get(sae_id, sae_id)}"


def check_release(release: str, sae_id: str) -> None:
    """Refuse an unknown release or sae_id up front, with the valid choices (no network needed)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise UserError(f"unknown SAELens release {release!r}; see sae_lens/pretrained_saes.yaml for the names")
    ids = directory[release].saes_map
    if sae_id not in ids:
        layers = sorted({layer_of_hook(i) for i in ids if layer_of_hook(i) is not None})
        raise UserError(f"the SAELens release {release} has no SAE {sae_id!r}; its resid_pre layers are "
                        f"{', '.join(map(str, layers))}")


def load_disk_sae(folder: Path, device: str = "cpu", tag: str | None = None, scaling: str | None = None) -> LoadedSAE:
    """A SAELens SAE saved on disk (`SAE.load_from_disk`); the paper's Mistral export is norm-rescaled."""
    from sae_lens import SAE

    folder = Path(folder).expanduser()
    if not folder.exists():
        raise UserError(f"--sae_path {folder} does not exist; give a SAELens SAE folder (cfg.json + "
                        f"sae_weights.safetensors) or a paper-format .pt file")
    if folder.is_file() or not (folder / "cfg.json").is_file():
        raise UserError(f"--sae_path {folder} is not a SAELens SAE folder (no cfg.json); give a folder written by "
                        f"SAE.save_model, or a paper-format .pt file")
    from safetensors import SafetensorError

    try:
        sae = SAE.load_from_disk(str(folder), device=device)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise UserError(f"cannot load the SAELens SAE in {folder} ({type(err).__name__}: {err}); its files are "
                        f"damaged or incomplete: save or download it again") from None
    paper_export = scaling is None and is_paper_mistral_export(sae)
    if paper_export:
        print(f"note: {folder} is the paper's Mistral SAE export (mistral-7b-res-wg); its inputs are rescaled to "
              f"norm sqrt(d) as in training (--sae_input_scaling none turns this off)", file=sys.stderr)
    return wrap_sae_lens(sae, tag=tag or sanitize_tag(folder.name), source=str(folder.resolve()),
                         force_norm_rescale=paper_export, scaling=scaling)


# ----------------------------------------------------------------------------------------- paper .pt


class AttrBag:
    """Stand-in for any class a pickle names that we do not import (the paper's SAE training config).

    Holds whatever state the pickle sets, as plain attributes; has no behaviour.
    """

    _pickled_class = ""

    def __init__(self, *args: Any, **kwargs: Any):
        self._args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            for part in state:
                self.__dict__.update(part or {})
        elif isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{self._pickled_class or 'AttrBag'}({fields})"


_TORCH_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Tensor"), ("torch._tensor", "Tensor"), ("torch.nn.parameter", "Parameter"), ("torch", "device"),
    ("torch", "Size"),
}
_PLAIN_ALLOWED = {
    ("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("builtins", "object"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "complex"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"), ("pathlib", "Path"),
}
_REFUSED_ROOTS = {"torch", "numpy", "sae_lens", "transformer_lens", "transformers", "multid", "dill", "cloudpickle",
                  "joblib", "IPython", "setuptools", "pip", "_pytest", "pytest"}


class RefusedPickleError(pickle.UnpicklingError):
    """The pickle names something executable; nothing from it was run."""


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors and plain containers; any other class from a non-system module becomes an AttrBag;
    functions and classes of the standard library or of installed packages (os.system, eval, ...) are refused."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        import _compat_pickle

        import torch

        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol <= 2 pickles use Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _TORCH_ALLOWED or (module, name) in _PLAIN_ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        root = module.split(".")[0]
        if root in sys.stdlib_module_names or root in _REFUSED_ROOTS or root.startswith("_"):
            raise RefusedPickleError(f"refusing to load {module}.{name}: only tensors, plain containers and "
                                         f"configuration objects are allowed in an SAE file")
        return type(name, (AttrBag,), {"__module__": "multid.sae.data.sae_loading.unpickled",
                                       "_pickled_class": f"{module}.{name}"})


class _RestrictedPickleModule:
    """What torch.load needs of a pickle module: our Unpickler (torch subclasses it to handle storages)."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()


def load_paper_pt(path: Path) -> tuple[Any, dict[str, Any]]:
    """Read a paper-format SAE `.pt` on the CPU: (config as an AttrBag, state dict of tensors)."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"SAE file {path} does not exist; give the paper's Mistral SAE .pt (README: download it "
                        f"into sae_multid_feature_discovery/saes/mistral_saes) or a SAELens folder")
    try:
        # a third-party file whose config is a pickled class of the paper's own code, which torch's weights-only
        # loader refuses by design; safety comes from our restricted unpickler instead (tensors, plain data,
        # config classes as attribute bags; anything executable is refused)
        data = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    except RefusedPickleError as err:
        raise UserError(f"refusing to load {path}: {err}") from None
    except Exception as err:  # noqa: BLE001 - damaged or foreign files
        raise UserError(f"cannot read {path} as an SAE .pt file ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise UserError(f"{path} is not in the paper's SAE format: expected a dict with 'cfg' and 'state_dict'")
    state = data["state_dict"]
    needed = ("W_enc", "b_enc", "W_dec", "b_dec")
    missing = [k for k in needed if not isinstance(state.get(k) if isinstance(state, dict) else None, torch.Tensor)]
    if missing:
        raise UserError(f"{path}: the state_dict lacks tensor(s) {', '.join(missing)}; expected {', '.join(needed)}")
    W_enc, b_enc, W_dec, b_dec = (state[k].detach().float() for k in needed)
    d, F = W_enc.shape if W_enc.ndim == 2 else (None, None)
    if (W_enc.ndim != 2 or tuple(b_enc.shape) != (F,) or tuple(W_dec.shape) != (F, d)
            or tuple(b_dec.shape) != (d,)):
        raise UserError(f"{path}: inconsistent SAE shapes W_enc {tuple(W_enc.shape)}, b_enc {tuple(b_enc.shape)}, "
                        f"W_dec {tuple(W_dec.shape)}, b_dec {tuple(b_dec.shape)}; expected [d, F], [F], [F, d], [d]")
    return data.get("cfg"), {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}


def load_paper_pt_sae(path: Path, device: str = "cpu", tag: str | None = None, layer: int | None = None) -> LoadedSAE:
    """The paper's Mistral SAE: f = ReLU(s W_enc + b_enc) with s = x sqrt(d)/||x|| (no b_dec subtraction)."""
    import torch

    cfg, state = load_paper_pt(path)
    hook = (getattr(cfg, "hook_point", None) or getattr(cfg, "hook_name", None)
            or _hook_from_name(Path(path).name) or (f"blocks.{layer}.hook_resid_pre" if layer is not None else None))
    if not isinstance(hook, str):
        raise UserError(f"{path}: cannot tell which hook the SAE reads (no hook_point in its config, none in its "
                        f"file name); pass the layer")
    W_enc, b_enc, W_dec, b_dec = (state[k].to(device) for k in ("W_enc", "b_enc", "W_dec", "b_dec"))

    def encode_scaled(s):
        return torch.relu(s @ W_enc + b_enc)

    return LoadedSAE(W_dec=W_dec, b_dec=b_dec, hook_name=hook, input_scaling="norm_sqrt_d",
                     tag=tag or sanitize_tag(Path(path).stem), source=str(Path(path).resolve()),
                     encode_scaled=encode_scaled)


def _hook_from_name(name: str) -> str | None:
    match = re.search(r"(blocks\.\d+\.hook_[a-z_]+?)(?:_\d+|\.pt|$)", name)
    return match.group(1) if match else None


# ----------------------------------------------------------------------------------------- decoder only


def load_decoder_file(path: str | os.PathLike) -> np.ndarray:
    """W_dec [F, d] float32 from a `.npy` file or a `.npz` with key `W_dec` (no pickles)."""
    from multid.io import corrupted

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--decoder_file {path} does not exist; give a .npy [F, d] or a .npz with key W_dec")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "W_dec" not in data.files:
                    raise UserError(f"--decoder_file {path} has keys {', '.join(data.files) or '(none)'}; "
                                    f"expected W_dec")
                W = data["W_dec"]
        else:
            W = np.load(path, allow_pickle=False)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001
        raise corrupted(path, err) from None
    if W.ndim != 2 or min(W.shape) < 1 or not np.issubdtype(W.dtype, np.floating):
        raise UserError(f"--decoder_file {path} holds a {W.dtype} array of shape {W.shape}; expected a 2-D float "
                        f"matrix [F, d] (one decoder row per SAE feature)")
    return np.ascontiguousarray(W, dtype=np.float32)


def load_decoder(model: str | None = None, layer: int | None = None, *, sae_path: str | os.PathLike | None = None,
                 release: str | None = None, decoder_file: str | os.PathLike | None = None,
                 device: str = "cpu") -> np.ndarray:
    """W_dec [F, d] float32: from `decoder_file` when given, else from the SAE `load_sae` finds."""
    if decoder_file is not None:
        return load_decoder_file(decoder_file)
    if model is None:
        raise UserError("give a model and layer (or --sae_path), or --decoder_file")
    return load_sae(model, layer, sae_path=sae_path, release=release, device=device).decoder_numpy()


# ----------------------------------------------------------------------------------------- model checks


def hook_width(model: Any, hook: str) -> int | None:
    """Width of the activations at `hook` for the usual residual/output hooks (None when unknown)."""
    cfg = model.cfg
    if re.search(r"hook_resid_(pre|mid|post)$|hook_(mlp|attn)_out$", hook):
        return int(cfg.d_model)
    if hook.endswith("hook_z") and getattr(cfg, "n_heads", None) and getattr(cfg, "d_head", None):
        return int(cfg.n_heads * cfg.d_head)
    return None


def check_sae_fits_model(sae: LoadedSAE, model: Any, model_name: str) -> None:
    """The SAE's hook exists in the model and its input width is the width of the activations there."""
    if sae.hook_name not in model.hook_dict:
        raise UserError(f"the SAE ({sae.tag}) reads {sae.hook_name}, which model {model_name!r} does not have "
                        f"({model.cfg.n_layers} layers); pick an SAE made for this model")
    width = hook_width(model, sae.hook_name)
    if width is not None and width != sae.d_in:
        raise UserError(f"the SAE ({sae.tag}) reads {sae.d_in}-dim inputs but model {model_name!r} has "
                        f"{width}-dim activations at {sae.hook_name}; pick the SAE made for this model")
