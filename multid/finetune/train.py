"""LoRA fine-tuning of a registered base model on the arithmetic prompts of `multid.tasks.phrasings`.

The recipe (docs/finetune.md): PEFT LoRA on every attention and MLP projection of a Hugging Face
Llama-style model; one model for both tasks (batches alternate weekday and month prompts); the loss is
cross-entropy over the whole vocabulary on the answer token only (the token after the prompt's last
word, as the task caches score it); AdamW, linear warm-up and decay; seeded, deterministic torch
algorithms and a fixed thread count, so a CPU run repeats exactly. The adapter is merged and the
result saved as a plain Hugging Face folder `<models dir>/<name>` with `finetune.json` (settings,
accuracies before and after on the paper's template and the held-out phrasing, time) through
`multid.stage.run_stage`: a second run with the same settings reuses it.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from multid.errors import UserError
from multid.tasks import phrasings
from multid.io import write_text_atomic
from multid.models import (
    FINETUNED,
    build_tiny_tokenizer,
    ensure_smollm2_converted,
    finetune_command,
    finetuned_folder,
    model_fingerprint,
)
from multid.config import models_dir
from multid.stage import Stage, run_stage
from multid.tasks.registry import TASK_NAMES, TASKS
from multid.tasks.spec import align_problems, answer_token_ids, generate_problems

FINETUNE_VERSION = 1
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SETTINGS_FILE = "finetune.json"
TEMPLATES = ("paper", "held_out")


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides the fine-tuned weights (stored in the stage record and finetune.json)."""

    steps: int
    batch_size: int = 16
    lr: float = 1e-3
    clip: float = 1.0  # gradient-norm clipping
    duration_power: float = 1.0  # durations drawn with weight 1/b**power (phrasings.mixed_order)
    rank: int = 16
    alpha: int = 32
    max_multiple: int = 2  # durations 1 .. max_multiple * p
    warmup_fraction: float = 0.05
    seed: int = 0
    threads: int = 2  # torch CPU threads; part of the settings because float sums depend on it

    def check(self) -> "FinetuneSettings":
        for name in ("steps", "batch_size", "rank", "alpha", "max_multiple", "threads"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise UserError(f"--lr must be between 0 and 1, got {self.lr}")
        if not self.clip > 0:
            raise UserError(f"the gradient clip must be positive, got {self.clip}")
        return self


DEFAULTS = {
    "smollm2-arith": FinetuneSettings(steps=400),
    "tiny-arith": FinetuneSettings(steps=4, batch_size=4, rank=4, alpha=8, max_multiple=2),
}


def default_settings(name: str) -> FinetuneSettings:
    check_name(name)
    return DEFAULTS[name]


def check_name(name: str) -> str:
    if name not in FINETUNED:
        raise UserError(f"unknown fine-tuned model {name!r}; choose one of {', '.join(FINETUNED)}")
    return name


# ----------------------------------------------------------------------------------------- base models


def build_tiny_hf(seed: int = 0):
    """A random Llama-style Hugging Face model with the tiny model's tokenizer and sizes (tests)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=4, head_dim=16, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    with torch.random.fork_rng():  # seeded weights without touching the caller's random state
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tokenizer


def load_base(name: str, base_dir: Path):
    """(Hugging Face model in float32, tokenizer) of the base model of fine-tuned model `name`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = FINETUNED[check_name(name)]
    if base == "tiny":
        return build_tiny_hf()
    folder = ensure_smollm2_converted(models_dir(base_dir))
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def hf_tokenize(tokenizer) -> Callable[[str], list[int]]:
    """The ids a TransformerLens forward pass sees: the BOS token, then the text without special tokens."""

    def tokenize(text: str) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + list(ids)

    return tokenize


# ----------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Encoded:
    ids: list[list[int]]
    answers: list[int]  # id of the answer token after the last prompt token
    answer_sets: list[list[int]]  # the p allowable answer ids of each example's task and phrasing


def encode(examples: Sequence[phrasings.Example], tokenize) -> Encoded:
    """Token ids, the answer id and the p allowable ids of every example (one continuation rule for all)."""
    answer_ids: dict[tuple[str, int], list[int]] = {}
    ids, answers, sets = [], [], []
    for example in examples:
        key = (example.task, example.phrasing)  # the answer token after each phrasing's last word
        if key not in answer_ids:
            answer_ids[key] = answer_token_ids(TASKS[example.task].start_words, tokenize, example.prompt)
        allowed = answer_ids[key]
        ids.append(tokenize(example.prompt))
        answers.append(allowed[example.info[2]])
        sets.append(allowed)
    return Encoded(ids, answers, sets)


def pad_batch(ids: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, index of each row's last real token)."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return input_ids, mask, torch.tensor([len(row) - 1 for row in ids])


def last_token_logits(causal_lm, input_ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Next-token logits at each row's last real token only (the unembedding of one position per row)."""
    hidden = causal_lm.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return causal_lm.lm_head(hidden[torch.arange(len(last)), last])


# ----------------------------------------------------------------------------------------- evaluation


def test_sets(tokenize) -> dict[tuple[str, str], list[phrasings.Example]]:
    """(task, template) -> the p*p test problems; template "paper" or "held_out". The paper's prompts
    get the task caches' ". " padding (`align_problems`), so "paper" counts equal Table 1's."""
    sets = {}
    for task in TASK_NAMES:
        aligned, _ = align_problems(TASKS[task], generate_problems(TASKS[task]), tokenize)
        sets[task, "paper"] = [phrasings.Example(task, problem.prompt, problem.target, problem.info, -1) for problem in aligned]
        sets[task, "held_out"] = phrasings.held_out_examples(task)
    return sets


@torch.no_grad()
def evaluate(causal_lm, tokenizer, batch_size: int = 64) -> dict[str, dict[str, Any]]:
    """Accuracy per task and template: correct = the answer has the top logit among the p allowable
    words (as Table 1); greedy = it is the top token of the whole vocabulary."""
    causal_lm.eval()
    tokenize, pad_id = hf_tokenize(tokenizer), pad_token_id(tokenizer)
    out: dict[str, dict[str, Any]] = {}
    for (task, template), examples in test_sets(tokenize).items():
        encoded = encode(examples, tokenize)
        correct = greedy = 0
        for start in range(0, len(examples), batch_size):
            rows = slice(start, start + batch_size)
            logits = last_token_logits(causal_lm, *pad_batch(encoded.ids[rows], pad_id))
            allowed = torch.tensor(encoded.answer_sets[rows])
            answers = torch.tensor(encoded.answers[rows])
            best = allowed[torch.arange(len(allowed)), logits.gather(1, allowed).argmax(dim=1)]
            correct += int((best == answers).sum())
            greedy += int((logits.argmax(dim=1) == answers).sum())
        out.setdefault(task, {})[template] = {"correct": correct, "greedy": greedy, "total": len(examples)}
    return out


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def format_accuracies(before: dict, after: dict) -> str:
    lines = [f"{'task':<16}{'template':<10}{'before':>10}{'after':>10}"]
    for task in TASK_NAMES:
        for template in TEMPLATES:
            b, a = before[task][template], after[task][template]
            lines.append(f"{task:<16}{template:<10}{b['correct']:>5}/{b['total']:<4}{a['correct']:>5}/{a['total']:<4}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- training


@contextlib.contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic torch algorithms for the block; the old state is restored."""
    old_threads, old_flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_flag)
        torch.set_num_threads(old_threads)


def training_batches(settings: FinetuneSettings) -> list[list[phrasings.Example]]:
    """`steps` batches of `batch_size` examples, weekday and month prompts alternating (seeded)."""
    pools = {task: phrasings.training_examples(task, settings.max_multiple) for task in TASK_NAMES}
    order = phrasings.mixed_order(pools, settings.steps * settings.batch_size, settings.seed, settings.duration_power)
    return [order[step * settings.batch_size:(step + 1) * settings.batch_size] for step in range(settings.steps)]


def learning_rate(step: int, settings: FinetuneSettings) -> float:
    warmup = max(1, int(settings.warmup_fraction * settings.steps))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    return settings.lr * max(0.0, (settings.steps - step) / max(1, settings.steps - warmup))


def train_lora(causal_lm, tokenizer, settings: FinetuneSettings, progress: bool = True):
    """Wrap `causal_lm` in a LoRA, train it on the answer token, return (merged model, loss per step)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(settings.seed)
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
                      bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(causal_lm, lora)
    inner = peft_model.get_base_model()
    params = [param for param in peft_model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    tokenize, pad_id = hf_tokenize(tokenizer), pad_token_id(tokenizer)
    losses = []
    peft_model.train()
    bar = tqdm(training_batches(settings), desc="LoRA fine-tuning", unit="step", disable=not progress)
    for step, batch in enumerate(bar):
        encoded = encode(batch, tokenize)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        logits = last_token_logits(inner, *pad_batch(encoded.ids, pad_id))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(encoded.answers))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged, losses


def stage_for(name: str, base_dir: Path, settings: FinetuneSettings) -> Stage:
    return Stage(
        name=f"fine-tuned model {name}",
        path=finetuned_folder(name, base_dir),
        settings={
            "version": FINETUNE_VERSION,
            "name": name,
            "base": model_fingerprint(FINETUNED[name]),
            "training": asdict(settings),
            "lora_targets": list(TARGET_MODULES),
            "phrasings": phrasings.TRAIN_PHRASINGS,
            "held_out": phrasings.HELD_OUT,
            "number_styles": list(phrasings.NUMBER_STYLES),
        },
        command=finetune_command(name, base_dir),
        is_dir=True,
    )


def build_finetuned(name: str, base_dir: Path, settings: FinetuneSettings, out: Path, progress: bool = True) -> dict:
    """Train and save into the empty folder `out`; returns what finetune.json holds."""
    started = time.time()
    with deterministic(settings.threads):
        causal_lm, tokenizer = load_base(name, base_dir)
        before = evaluate(causal_lm, tokenizer)
        trained_at = time.time()
        merged, losses = train_lora(causal_lm, tokenizer, settings, progress)
        train_s = time.time() - trained_at
        after = evaluate(merged, tokenizer)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {
        "name": name,
        "base": FINETUNED[name],
        "settings": asdict(settings),
        "lora_targets": list(TARGET_MODULES),
        "training_examples": {task: len(phrasings.training_examples(task, settings.max_multiple)) for task in TASK_NAMES},
        "phrasings": phrasings.TRAIN_PHRASINGS,
        "held_out": phrasings.HELD_OUT,
        "accuracy_before": before,
        "accuracy_after": after,
        "loss_first_last_10": [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))],
        "losses": [round(value, 5) for value in losses],
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - started, 1),
        "torch_threads": settings.threads,
        "torch_version": torch.__version__,
    }
    write_text_atomic(out / SETTINGS_FILE, json.dumps(report, indent=2) + "\n")
    return report


def finetune(name: str, base_dir: Path, settings: FinetuneSettings | None = None, force: bool = False,
             progress: bool = True) -> tuple[Path, dict]:
    """The fine-tuned folder of `name` (trained now unless current), and its finetune.json."""
    settings = (settings or default_settings(name)).check()
    check_name(name)
    folder = run_stage(stage_for(name, base_dir, settings),
                       lambda out: build_finetuned(name, base_dir, settings, out, progress), force=force)
    return folder, read_report(folder)


def read_report(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / SETTINGS_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{folder / SETTINGS_FILE} is unreadable ({err}); rebuild with --force") from None


def with_overrides(settings: FinetuneSettings, **changes: Any) -> FinetuneSettings:
    """`settings` with the given fields changed (None values ignored)."""
    return replace(settings, **{key: value for key, value in changes.items() if value is not None})
