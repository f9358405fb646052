"""Train a sparse autoencoder on a model's residual stream with SAELens' own trainer (docs/discover.md).

Two stages, both through multid.stage (a second run reuses them):
1. the activation cache: the model runs once over the text (contexts cut exactly as the occurrence generator
   cuts them: BOS + the first ctx_len - 1 tokens of each document), up to the hook only; the residuals
   [n_ctx, ctx_len, d] (float32) and token ids go to a folder. The occurrence stage later encodes the same
   cached residuals (`cached_encoder`), so the model runs over the corpus only once.
2. the SAE: SAELens' `SAETrainer` fed by shuffled batches of cached residuals (BOS positions left out, as
   their norm is far above every other position's; the last `eval_contexts` contexts held out), its
   decoder rows folded to unit norm (as the paper's SAEs have; the clustering's dot products are then
   cosines), then saved in SAELens' on-disk format (cfg.json + sae_weights.safetensors) with `training_metrics.json`: L0,
   explained variance, dead-feature fraction and the CE loss recovered when spliced into the model, all on
   the held-out contexts.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from multid.errors import UserError
from multid.io import load_json, save_json
from multid.sae.data.occurrence_format import feature_triples
from multid.sae.stage_configs import TrainConfig
from multid.stage import Stage, artifact_id, is_current, run_stage

ARCHITECTURES = ("standard", "topk", "batchtopk", "matryoshka")
TOPK_FAMILY = ("topk", "batchtopk", "matryoshka")  # k active features per token (batchtopk: on average over a batch)
NORMALISATIONS = ("fixed", "trainer")
B_DEC_INITS = ("mean", "zeros")
TRAIN_DEAD_POSITIONS = 131_072  # training positions on which dead_fraction_train is counted
ACTS_FILE = "activations.npy"
TOKENS_FILE = "token_ids.npy"
METRICS_FILE = "training_metrics.json"
VERSION = 1  # of the residual cache
SAE_VERSION = 3  # of the trained SAE (2: decoder norms folded into the encoder; 3: normalisation, b_dec init, AuxK
#                 window and coefficient are settings)


def default_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


# ----------------------------------------------------------------------------------------- activation cache


@dataclass(frozen=True)
class ActivationCache:
    folder: Path
    acts: np.ndarray  # [n_ctx, ctx_len, d] float32 (memory-mapped)
    token_ids: np.ndarray  # [n_ctx, ctx_len] int32

    @property
    def num_contexts(self) -> int:
        return int(self.acts.shape[0])

    @property
    def ctx_len(self) -> int:
        return int(self.acts.shape[1])


def open_activation_cache(folder: Path) -> ActivationCache:
    acts = np.load(Path(folder) / ACTS_FILE, mmap_mode="r")
    token_ids = np.load(Path(folder) / TOKENS_FILE)
    return ActivationCache(Path(folder), acts, token_ids)


def cache_contexts(source: Any, model: Any, ctx_len: int, max_contexts: int | None) -> list[list[int]]:
    """The token ids of every context, cut as the occurrence generator cuts them."""
    from multid.sae.data.text_sources import iter_contexts, tl_tokenizer

    return [tokens for _c, tokens in iter_contexts(source.documents(), tl_tokenizer(model), ctx_len, max_contexts)]


def residual_hook_width(model: Any, hook: str) -> int:
    """The width of the activations at `hook`, which must be one [batch, pos, d] hook of the model."""
    from multid.sae.data.sae_loading import hook_width

    if hook not in model.hook_dict:
        resid = [name for name in model.hook_dict if name.endswith("hook_resid_pre")]
        raise UserError(f"the model has no hook {hook!r} (it has {model.cfg.n_layers} layers; residual hooks: "
                        f"{resid[0]} .. {resid[-1]})" if resid else f"the model has no hook {hook!r}")
    width = hook_width(model, hook)
    if width is None or hook.endswith("hook_z"):
        raise UserError(f"an SAE here is trained on [batch, position, d] activations (hook_resid_pre/mid/post, "
                        f"hook_mlp_out, hook_attn_out); {hook!r} is not one of those")
    return width


def reserve_space(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now: a full disk is then an error here, not a SIGBUS mid-write."""
    import errno
    import os
    import shutil

    size = os.path.getsize(path)
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(Path(path).parent).free
            raise UserError(f"not enough disk space for the residual cache {path}: it needs {size / 2**30:.2f} GiB, "
                            f"{free / 2**30:.2f} GiB are free; free some space or give another --base_dir") from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without fallocate: write as before
            raise


def write_activation_cache(folder: Path, model: Any, hook: str, contexts: list[list[int]], batch_size: int,
                           progress: bool = True) -> None:
    """Run the model up to `hook` over the contexts, batch by batch, into folder/activations.npy."""
    import torch
    from tqdm.auto import tqdm

    from multid.sae.analysis.occurrence_generator import activations_at_hook

    if not contexts:
        raise UserError("the text gave no context long enough; give more text or a smaller --ctx_len")
    ids = np.asarray(contexts, dtype=np.int32)
    d = residual_hook_width(model, hook)
    acts = np.lib.format.open_memmap(folder / ACTS_FILE, mode="w+", dtype=np.float32, shape=(*ids.shape, d))
    reserve_space(folder / ACTS_FILE)
    device = getattr(model.cfg, "device", None) or "cpu"
    with tqdm(total=len(ids), unit="ctx", desc=f"residuals at {hook}", disable=not progress) as bar:
        for start in range(0, len(ids), batch_size):
            batch = torch.as_tensor(ids[start:start + batch_size].astype(np.int64), device=device)
            acts[start:start + len(batch)] = activations_at_hook(model, batch, hook).float().cpu().numpy()
            bar.update(len(batch))
    acts.flush()
    del acts
    np.save(folder / TOKENS_FILE, ids, allow_pickle=False)


def activation_cache_stage(folder: Path, *, get_model: Callable[[], Any], model_info: dict[str, Any], hook: str,
                           source: Any, ctx_len: int, max_contexts: int | None = None, batch_size: int = 32,
                           command: str | None = None, progress: bool = True, whole_folder: Path | None = None
                           ) -> ActivationCache:
    """The residual cache of the first max_contexts contexts (all: None). Where `whole_folder` holds a current
    cache of every context of the same text, a prefix is copied from it instead of running the model (the
    contexts are cut in the same order, so the prefix's contexts are the whole cache's first ones)."""
    settings = {"model": model_info, "hook": hook, "source": source.fingerprint(), "ctx_len": int(ctx_len),
                "max_contexts": max_contexts, "bos": True, "version": VERSION}
    whole = Stage(f"residual cache at {hook}", Path(whole_folder), {**settings, "max_contexts": None},
                  is_dir=True) if whole_folder is not None and max_contexts is not None else None

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        if whole is not None and is_current(whole):
            copy_cache_prefix(open_activation_cache(whole.path), tmp, int(max_contexts), progress)
            return
        model = get_model()
        contexts = cache_contexts(source, model, ctx_len, max_contexts)
        write_activation_cache(tmp, model, hook, contexts, batch_size, progress)

    path = run_stage(Stage(f"residual cache at {hook}", Path(folder), settings, command=command, is_dir=True), build)
    return open_activation_cache(path)


def copy_cache_prefix(whole: ActivationCache, folder: Path, max_contexts: int, progress: bool = True,
                      chunk: int = 256) -> None:
    """The first max_contexts contexts of a whole-corpus cache, written as a cache of their own."""
    from tqdm.auto import tqdm

    n = min(max_contexts, whole.num_contexts)
    acts = np.lib.format.open_memmap(folder / ACTS_FILE, mode="w+", dtype=np.float32,
                                     shape=(n, *whole.acts.shape[1:]))
    reserve_space(folder / ACTS_FILE)
    with tqdm(total=n, unit="ctx", desc=f"residuals copied from {whole.folder.name}", disable=not progress) as bar:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            acts[start:stop] = whole.acts[start:stop]
            bar.update(stop - start)
    acts.flush()
    del acts
    np.save(folder / TOKENS_FILE, np.asarray(whole.token_ids[:n]), allow_pickle=False)


def cached_encoder(cache: ActivationCache, sae: Any, threshold: float):
    """An occurrence EncodeFn (multid.sae.data.occurrence_store) that reads the cached residuals instead of running the
    model; it checks that the contexts asked for are the cached ones."""
    import torch

    ctx_len = cache.ctx_len

    def encode(cs: np.ndarray, ids: np.ndarray):
        cs = np.asarray(cs, dtype=np.int64)
        if cs.max(initial=-1) >= cache.num_contexts or not np.array_equal(cache.token_ids[cs], np.asarray(ids)):
            raise UserError(f"the residual cache {cache.folder} does not hold these contexts (another text, "
                            f"tokenizer or ctx_len); rerun with --force")
        x = torch.from_numpy(np.ascontiguousarray(cache.acts[cs])).reshape(len(cs) * ctx_len, -1)
        with torch.no_grad():
            return feature_triples(sae.encode(x.to(sae.device)), cs, ctx_len, ctx_len, threshold)

    return encode


# ----------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainSettings:
    """The SAE and its training run (SAELens' names where they exist)."""

    architecture: str = TrainConfig.architecture  # the defaults are train_sae.py's (multid.sae.stage_configs)
    expansion: int = TrainConfig.expansion
    l1_coefficient: float = TrainConfig.l1_coefficient
    k: int = TrainConfig.k
    training_tokens: int = TrainConfig.training_tokens
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    lr_warm_up_steps: int = 20
    l1_warm_up_steps: int = 50
    eval_contexts: int = TrainConfig.eval_contexts
    seed: int = TrainConfig.seed
    aux_loss_coefficient: float = TrainConfig.aux_loss_coefficient
    dead_feature_window: int = TrainConfig.dead_feature_window
    normalisation: str = TrainConfig.normalisation
    b_dec_init: str = TrainConfig.b_dec_init
    matryoshka_levels: int = TrainConfig.matryoshka_levels

    def check(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"--architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        for name, allowed in (("normalisation", NORMALISATIONS), ("b_dec_init", B_DEC_INITS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.b_dec_init == "mean" and self.normalisation == "trainer":
            raise UserError("--b_dec_init mean needs --normalisation fixed: SAELens estimates its own scale inside "
                            "the trainer, after the bias is set, so the mean would be in the wrong units")
        for name in ("expansion", "k", "training_tokens", "batch_size", "eval_contexts", "dead_feature_window",
                     "matryoshka_levels"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.training_tokens < self.batch_size:
            raise UserError(f"--training_tokens {self.training_tokens} is less than one batch ({self.batch_size})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        for name in ("l1_coefficient", "aux_loss_coefficient"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UserError(f"--{name} must be a non-negative number, got {getattr(self, name)}")

    def check_width(self, d_in: int) -> None:
        """Settings that need the activations' width: TopK's k must not exceed the SAE's features."""
        if self.architecture == "matryoshka" and self.expansion * d_in >> (self.matryoshka_levels - 1) < self.k:
            raise UserError(f"--matryoshka_levels {self.matryoshka_levels}: the smallest level would have fewer "
                            f"features than k = {self.k}; use fewer levels")
        if self.architecture in TOPK_FAMILY and self.k > self.expansion * d_in:
            raise UserError(f"--k {self.k} is more than the SAE's {self.expansion * d_in} features "
                            f"(--expansion {self.expansion} x width {d_in}); lower --k or raise --expansion")

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size

    def tag(self) -> str:
        """x<expansion>_<kind>_<tokens>k_seed<s>, then every other setting that changes the weights and differs
        from its default (so two trainings that differ in any of them never share a folder)."""
        kind = f"{self.architecture}{self.k}" if self.architecture in TOPK_FAMILY else f"l1-{self.l1_coefficient:g}"
        if self.architecture == "matryoshka":
            kind += f"-levels{self.matryoshka_levels}"
        default = TrainSettings()
        extra = "".join(f"_{short}{getattr(self, name):g}" for name, short in (
            ("batch_size", "bs"), ("lr", "lr"), ("lr_warm_up_steps", "warmup"), ("l1_warm_up_steps", "l1warmup"),
            ("eval_contexts", "eval"), ("aux_loss_coefficient", "aux"), ("dead_feature_window", "window"))
            if getattr(self, name) != getattr(default, name))
        extra += "".join(f"_{short}{getattr(self, name)}" for name, short in (
            ("normalisation", "norm-"), ("b_dec_init", "bdec-")) if getattr(self, name) != getattr(default, name))
        return f"x{self.expansion}_{kind}_{self.training_tokens // 1000}k_seed{self.seed}{extra}"


def split_contexts(num_contexts: int, eval_contexts: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) context indices: the last eval_contexts are held out (at most a quarter of them)."""
    n_eval = min(eval_contexts, num_contexts // 4)
    if num_contexts - n_eval < 1:
        raise UserError(f"only {num_contexts} contexts: too few to train an SAE")
    return np.arange(num_contexts - n_eval), np.arange(num_contexts - n_eval, num_contexts)


def training_positions(acts: np.ndarray, contexts: np.ndarray) -> np.ndarray:
    """The residuals [n, d] of `contexts` at positions 1.. (BOS left out: its norm is far above the rest's)."""
    return np.ascontiguousarray(np.asarray(acts[contexts][:, 1:]).reshape(-1, acts.shape[2]))


def activation_scale(flat: np.ndarray, chunk: int = 65_536) -> float:
    """sqrt(d) / the mean norm of the training positions: scaled by it, they have mean norm sqrt(d) (the
    normalisation SAELens calls expected_average_only_in, here fixed by the whole training set, not estimated
    from a few batches)."""
    total = sum(float(np.linalg.norm(flat[i:i + chunk].astype(np.float64), axis=1).sum())
                for i in range(0, len(flat), chunk))
    return math.sqrt(flat.shape[1]) / (total / len(flat))


def positions_mean(flat: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    total = sum(flat[i:i + chunk].astype(np.float64).sum(0) for i in range(0, len(flat), chunk))
    return (total / len(flat)).astype(np.float32)


def batch_stream(flat: np.ndarray, batch_size: int, seed: int, scale: float = 1.0) -> Iterator[Any]:
    """Endless shuffled batches [batch_size, d] of the training positions, times `scale`; each epoch is a fresh
    permutation from a seeded generator."""
    import torch

    if len(flat) < batch_size:
        raise UserError(f"{len(flat)} training positions are fewer than one batch ({batch_size}); give more text "
                        f"or a smaller --batch_size")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(flat))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = torch.from_numpy(flat[np.sort(order[start:start + batch_size])])
            yield batch if scale == 1.0 else batch * scale


def matryoshka_widths(d_sae: int, levels: int) -> list[int]:
    """Nested prefix widths d_sae / 2^(levels-1), ..., d_sae / 2, d_sae (SAELens' matryoshka_widths)."""
    return [d_sae >> (levels - 1 - level) for level in range(levels)]


def training_config(d_in: int, settings: TrainSettings, hook: str, model_name: str):
    """SAELens' training config for the settings' architecture."""
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(hook_name=hook, model_name=model_name, prepend_bos=True)
    d_sae = settings.expansion * d_in
    # "fixed": the batches come in already scaled (fit_sae), so SAELens normalises nothing
    norm = "expected_average_only_in" if settings.normalisation == "trainer" else "none"
    common = {"d_in": d_in, "d_sae": d_sae, "normalize_activations": norm, "metadata": metadata}
    topk = {"aux_loss_coefficient": settings.aux_loss_coefficient}
    if settings.architecture == "topk":
        from sae_lens import TopKTrainingSAEConfig

        return TopKTrainingSAEConfig(k=settings.k, **topk, **common)
    if settings.architecture == "batchtopk":
        from sae_lens import BatchTopKTrainingSAEConfig

        return BatchTopKTrainingSAEConfig(k=float(settings.k), **topk, **common)
    if settings.architecture == "matryoshka":
        from sae_lens import MatryoshkaBatchTopKTrainingSAEConfig

        return MatryoshkaBatchTopKTrainingSAEConfig(k=float(settings.k), **topk, **common,
                                                    matryoshka_widths=matryoshka_widths(d_sae, settings.matryoshka_levels))
    from sae_lens import StandardTrainingSAEConfig

    return StandardTrainingSAEConfig(l1_coefficient=settings.l1_coefficient,
                                     l1_warm_up_steps=settings.l1_warm_up_steps, **common)


def training_sae(d_in: int, settings: TrainSettings, hook: str, model_name: str, b_dec: np.ndarray | None = None):
    """A fresh SAELens training SAE (seeded); `b_dec` (in the scaled space) starts the decoder bias."""
    import torch
    from sae_lens import TrainingSAE

    settings.check_width(d_in)
    torch.manual_seed(settings.seed)
    sae = TrainingSAE.from_dict(training_config(d_in, settings, hook, model_name).to_dict())
    if b_dec is not None:
        with torch.no_grad():
            sae.b_dec.copy_(torch.from_numpy(b_dec))
    return sae


@dataclass(frozen=True)
class FitResult:
    sae: Any  # the trained training-SAE, taking raw (unscaled) residuals
    scale: float | None  # the fixed activation scale folded into it (None: SAELens' own estimate)
    train_positions: np.ndarray  # [n, d] the residuals it was trained on


def fit_sae(acts: np.ndarray, train_contexts: np.ndarray, settings: TrainSettings, hook: str,
            model_name: str) -> FitResult:
    """Train with SAELens' SAETrainer (no loop of ours). With normalisation "fixed", the batches are scaled to
    mean norm sqrt(d) by a factor taken from the whole training set, and the factor is folded into the weights
    afterwards (SAELens' fold_activation_norm_scaling_factor), as SAELens does with its own estimate."""
    import torch
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    flat = training_positions(acts, train_contexts)
    scale = activation_scale(flat) if settings.normalisation == "fixed" else None
    b_dec = positions_mean(flat) * scale if scale is not None and settings.b_dec_init == "mean" else None
    sae = training_sae(int(acts.shape[2]), settings, hook, model_name, b_dec)
    cfg = SAETrainerConfig(total_training_samples=settings.steps * settings.batch_size,
                           train_batch_size_samples=settings.batch_size, lr=settings.lr, lr_end=settings.lr / 10,
                           lr_warm_up_steps=settings.lr_warm_up_steps, device="cpu",
                           logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=20,
                           dead_feature_window=settings.dead_feature_window)
    torch.manual_seed(settings.seed)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batch_stream(flat, settings.batch_size, settings.seed,
                                                                       scale or 1.0))
    trained = trainer.fit()
    if scale is not None:
        trained.fold_activation_norm_scaling_factor(scale)
    return FitResult(trained, scale, flat)


# ----------------------------------------------------------------------------------------- metrics


def dead_fraction_on(sae: Any, flat: np.ndarray, positions: int, seed: int, chunk: int = 8192) -> float:
    """The share of features that never fire on a seeded sample of `positions` of the rows of `flat`."""
    import torch

    rng = np.random.default_rng([seed, 1])
    rows = np.sort(rng.choice(len(flat), size=min(positions, len(flat)), replace=False))
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    with torch.no_grad():
        for i in range(0, len(rows), chunk):
            fired |= (sae.encode(torch.from_numpy(flat[rows[i:i + chunk]])) > 0).any(0)
    return float((~fired).float().mean())


def reconstruction_metrics(sae: Any, x: Any) -> dict[str, float]:
    """L0, explained variance and dead-feature fraction of `sae` on residuals x [n, d]."""
    import torch

    with torch.no_grad():
        feats = sae.encode(x)
        recon = sae.decode(feats)
    fired = (feats > 0)
    resid = ((x - recon) ** 2).sum()
    total = ((x - x.mean(0)) ** 2).sum()
    return {"l0": float(fired.sum(1).float().mean()), "explained_variance": float(1 - resid / total),
            "dead_fraction": float((~fired.any(0)).float().mean()), "eval_positions": int(len(x)),
            "mse": float(((x - recon) ** 2).sum(1).mean())}


def ce_losses(model: Any, sae: Any, hook: str, tokens: Any, batch_size: int = 16) -> dict[str, float]:
    """Next-token CE loss with the residual at `hook` kept (clean), replaced by the SAE's reconstruction, and
    zero-ablated; BOS keeps its own residual in all three (as is usual: its norm is far out of the SAE's range).
    CE loss recovered = (zero - sae) / (zero - clean)."""
    import torch

    def splice(kind: str):
        def hook_fn(act, hook=None):  # noqa: ARG001 - TransformerLens hook signature
            out = act.clone()
            if kind == "sae":
                b, t, d = act.shape
                out[:, 1:] = sae.decode(sae.encode(act[:, 1:].reshape(-1, d))).reshape(b, t - 1, d)
            else:
                out[:, 1:] = 0.0
            return out
        return hook_fn

    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start:start + batch_size]
            n = len(batch)
            sums["clean"] += float(model(batch, return_type="loss")) * n
            for kind in ("sae", "zero"):
                sums[kind] += float(model.run_with_hooks(batch, return_type="loss",
                                                         fwd_hooks=[(hook, splice(kind))])) * n
    losses = {k: v / len(tokens) for k, v in sums.items()}
    gap = losses["zero"] - losses["clean"]
    recovered = (losses["zero"] - losses["sae"]) / gap if gap > 0 else math.nan
    return {"ce_loss_clean": losses["clean"], "ce_loss_with_sae": losses["sae"], "ce_loss_zero_ablation":
            losses["zero"], "ce_loss_recovered": recovered, "ce_eval_contexts": int(len(tokens))}


def evaluate_sae(sae: Any, cache: ActivationCache, eval_contexts: np.ndarray, model: Any | None, hook: str
                 ) -> dict[str, float]:
    import torch

    x = torch.from_numpy(np.asarray(cache.acts[eval_contexts][:, 1:]).reshape(-1, cache.acts.shape[2]).copy())
    metrics = reconstruction_metrics(sae, x)
    if model is not None:
        tokens = torch.as_tensor(cache.token_ids[eval_contexts].astype(np.int64))
        metrics.update(ce_losses(model, sae, hook, tokens))
    return metrics


# ----------------------------------------------------------------------------------------- the SAE stage


def sae_stage(folder: Path, cache: ActivationCache, settings: TrainSettings, *, hook: str, model_name: str,
              get_model: Callable[[], Any] | None, command: str | None = None) -> Path:
    """Train (or reuse) the SAE in `folder` (SAELens format + training_metrics.json)."""
    settings.check()
    stage = Stage(f"SAE for {model_name} at {hook} ({settings.tag()})", Path(folder),
                  {"train": asdict(settings), "hook": hook, "model": model_name,
                   "activations": artifact_id(cache.folder, is_dir=True), "version": SAE_VERSION},
                  command=command, is_dir=True)

    def build(tmp: Path) -> None:
        from sae_lens import SAE

        train_idx, eval_idx = split_contexts(cache.num_contexts, settings.eval_contexts)
        started = time.time()
        fit = fit_sae(cache.acts, train_idx, settings, hook, model_name)
        seconds = time.time() - started
        fit.sae.save_inference_model(tmp)
        sae = SAE.load_from_disk(str(tmp))
        fold_decoder_norms(sae)
        sae.save_model(tmp)
        sae.eval()
        metrics = evaluate_sae(sae, cache, eval_idx, get_model() if get_model else None, hook)
        metrics.update({"dead_fraction_train": dead_fraction_on(sae, fit.train_positions, TRAIN_DEAD_POSITIONS,
                                                                settings.seed),
                        "dead_train_positions": int(min(TRAIN_DEAD_POSITIONS, len(fit.train_positions))),
                        "architecture": settings.architecture, "d_in": int(cache.acts.shape[2]),
                        "d_sae": int(sae.cfg.d_sae), "training_tokens": settings.steps * settings.batch_size,
                        "training_positions": int(len(fit.train_positions)),
                        "epochs": round(settings.steps * settings.batch_size / len(fit.train_positions), 2),
                        "activation_scale": fit.scale, "training_steps": settings.steps,
                        "training_seconds": round(seconds, 1), "torch_threads": torch_threads(),
                        "train_contexts": int(len(train_idx)), "eval_contexts": int(len(eval_idx)),
                        "hook": hook, "model": model_name})
        save_json(tmp / METRICS_FILE, metrics)

    return run_stage(stage, build)


def torch_threads() -> int:
    """Torch's intra-op threads: the order of floating-point sums, and so the last bits of the weights, depend on
    it (docs/discover.md, reproducibility)."""
    import torch

    return int(torch.get_num_threads())


def fold_decoder_norms(sae: Any) -> None:
    """Give every decoder row unit norm, scaling its encoder column and bias to match (SAELens'
    fold_W_dec_norm): the SAE computes the same reconstructions, and its decoder rows, like the paper's SAEs',
    are unit vectors, so the clustering's dot products are cosines (docs/discover.md)."""
    sae.fold_W_dec_norm()


def read_metrics(folder: Path) -> dict[str, Any]:
    return load_json(Path(folder) / METRICS_FILE)


def format_metrics(metrics: dict[str, Any]) -> str:
    parts = [f"L0 {metrics['l0']:.1f}", f"explained variance {metrics['explained_variance']:.3f}",
             f"dead features {100 * metrics['dead_fraction']:.1f}% (over {metrics['eval_positions']:,} held-out "
             f"positions)"]
    if "dead_fraction_train" in metrics:
        parts.append(f"{100 * metrics['dead_fraction_train']:.1f}% never fire on {metrics['dead_train_positions']:,} "
                     f"training positions")
    if "ce_loss_recovered" in metrics:
        parts.append(f"CE loss recovered {metrics['ce_loss_recovered']:.3f} (clean {metrics['ce_loss_clean']:.3f}, "
                     f"with SAE {metrics['ce_loss_with_sae']:.3f}, zero-ablated {metrics['ce_loss_zero_ablation']:.3f})")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------- the whole training


def source_slug(source: Any) -> str:
    import hashlib
    import json

    return hashlib.sha1(json.dumps(source.fingerprint(), sort_keys=True).encode()).hexdigest()[:10]


def cache_folder(base_dir: Path, model_name: str, hook: str, ctx_len: int, source: Any,
                 max_contexts: int | None = None) -> Path:
    """Where the residual cache of the text (of its first max_contexts contexts) lives."""
    first = f"_first{max_contexts}" if max_contexts is not None else ""
    return Path(base_dir) / "sae_training" / f"{model_name}_{hook}_ctx{ctx_len}_{source_slug(source)}{first}"


DEFAULT_CTX_LEN = TrainConfig.ctx_len


def sae_folder(base_dir: Path, model_name: str, layer: int, settings: TrainSettings, text_tag: str = "",
               hook: str | None = None, ctx_len: int = DEFAULT_CTX_LEN) -> Path:
    """<base>/saes/<model>_layer<L>/<tag>[_<hook>][_ctx<n>][_<text_tag>]: its name is the SAE's tag in the SAE run
    folders, so SAEs trained at another hook, context length, on different text (text_tag) or with other
    settings never share a folder (the hook and ctx_len appear only when they are not the defaults)."""
    parts = [settings.tag()]
    if hook is not None and hook != default_hook(layer):
        parts.append(hook.replace("blocks.", "").replace(".", "-"))
    if ctx_len != DEFAULT_CTX_LEN:
        parts.append(f"ctx{ctx_len}")
    if text_tag:
        parts.append(text_tag)
    return Path(base_dir) / "saes" / f"{model_name}_layer{layer}" / "_".join(parts)


def train_sae_for_model(*, base_dir: Path, model_name: str, layer: int, hook: str | None, source: Any,
                        ctx_len: int, settings: TrainSettings, get_model: Callable[[], Any],
                        model_info: dict[str, Any], max_contexts: int | None = None, batch_size: int = 32,
                        out: Path | None = None, command: str | None = None, progress: bool = True
                        ) -> tuple[Path, ActivationCache]:
    """The residual cache and the trained SAE (both reused when current); returns (SAE folder, cache)."""
    hook = hook or default_hook(layer)
    cache = activation_cache_stage(cache_folder(base_dir, model_name, hook, ctx_len, source, max_contexts),
                                   get_model=get_model, model_info=model_info, hook=hook, source=source,
                                   ctx_len=ctx_len, max_contexts=max_contexts, batch_size=batch_size, command=command,
                                   progress=progress, whole_folder=cache_folder(base_dir, model_name, hook, ctx_len,
                                                                                source))
    folder = out or sae_folder(base_dir, model_name, layer, settings, source_slug(source)[:8], hook=hook,
                               ctx_len=ctx_len)
    path = sae_stage(folder, cache, settings, hook=hook, model_name=model_name, get_model=get_model, command=command)
    return path, cache
