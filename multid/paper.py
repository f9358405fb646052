"""The paper's settings in one place: which models and layers its figures show, and how they are titled."""

from __future__ import annotations

PAPER_MODELS = ("mistral", "llama")
MODEL_TITLES = {"mistral": "Mistral", "llama": "Llama", "gpt2": "GPT-2", "smollm2": "SmolLM2",
                "smollm2-arith": "SmolLM2-arith", "tiny": "Tiny"}
PAPER_N_BLOCKS = 32  # Mistral-7B and Llama-3-8B both have 32 blocks (cache layers 0..32)

# Single-model figures (Figure 3 panels, Figure 6, residual-c): Mistral for weekdays, Llama for months.
PAPER_CHOICE = {"days_of_week": "mistral", "months_of_year": "llama"}
FIGURE3_LAYERS = {("mistral", "days_of_week"): 30, ("llama", "months_of_year"): 3}  # a-token, cache layers
FIGURE5_MAX_LAYER = 24  # Figure 5 shows the first 25 cache layers (0..24) of Mistral and Llama
FIGURE5_CONFIDENCE = 0.96  # the width of Figure 5's bands
FIGURE6 = {"model": "mistral", "task": "days_of_week", "layer": 5, "bs": (2, 3, 4, 5), "pca_k": 5}
RESIDUAL_C = {"model": "mistral", "task": "days_of_week", "layer": 25}


SAE_MODEL_TITLES = {"gpt2": "GPT-2", "mistral": "Mistral-7B"}  # as the paper's SAE figures title them


def model_title(model: str) -> str:
    return MODEL_TITLES.get(model, model)


def sae_model_title(model: str) -> str:
    """The title of a model in the SAE figures (another model: its own name)."""
    return SAE_MODEL_TITLES.get(model, model)
