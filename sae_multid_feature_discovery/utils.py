"""Upstream-style helpers for the SAE scripts, re-exported from the library (multid.sae).

Upstream kept a hard-coded BASE_DIR and two SAE getters here. We keep the names for people porting their own
scripts; the artifacts live under `--base_dir` / $MULTID_BASE_DIR (default ./artifacts), and the getters
return `multid.sae.data.sae_loading.LoadedSAE` (stateless `.encode`, `.W_dec`, `.hook_name`, `.input_scaling`) instead of
a bare SAELens SAE, so the Mistral norm rescaling is always applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # imported from inside the folder as a plain module: find this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import default_base_dir
from multid.sae.data.sae_loading import LoadedSAE, load_decoder, load_sae
from multid.sae.data.occurrence_store import open_occurrences
from multid.sae.data.run_layout import run_dir

BASE_DIR = str(default_base_dir()) + "/"  # upstream: a hard-coded scratch folder


def get_gpt2_sae(device: str = "cpu", layer: int = 7, sae_path: str | None = None) -> LoadedSAE:
    """GPT-2 small residual SAE (SAELens gpt2-small-res-jb, blocks.L.hook_resid_pre), or one on disk."""
    return load_sae("gpt2", layer, sae_path=sae_path, device=device)


def get_mistral_sae(device: str = "cpu", layer: int = 8, sae_path: str | None = None) -> LoadedSAE:
    """Mistral-7B residual SAE: the paper's .pt where the README puts it, else SAELens mistral-7b-res-wg."""
    return load_sae("mistral", layer, sae_path=sae_path, device=device)


__all__ = ["BASE_DIR", "LoadedSAE", "get_gpt2_sae", "get_mistral_sae", "load_decoder", "load_sae",
           "open_occurrences", "run_dir"]
