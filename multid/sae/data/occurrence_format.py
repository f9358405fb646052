"""The SAE occurrence dataset's format (docs/sae_occurrences.md): file and column names, Parquet schemas, the
capacity and threshold constants, and how a batch of SAE activations becomes its (token, feature, value) triples.
The store (writing and reading) is multid.sae.data.occurrence_store; the model-running generator is
multid.sae.analysis.occurrence_generator.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from multid.sae.stage_configs import OccurrencesConfig

FORMAT_VERSION = 1
THRESHOLD = 1e-6  # a feature "fires" when its activation exceeds this (upstream: |f| > 1e-6 on ReLU outputs)
ROW_GROUP_ROWS = 1 << 20  # rows per Parquet row group of a triples file (fixed: bytes do not depend on batching)
DEFAULT_CONTEXTS_PER_PART = 512
DEFAULT_MAX_PAIRS = 10**9  # upstream's per-layer capacity
RUN_META = "run.json"
PROGRESS_NAME = ".progress.json"

TRIPLE_COLUMNS = ("token", "feature", "value")
TOKEN_COLUMNS = ("token", "token_id", "context", "position")


def triples_schema():
    import pyarrow as pa

    return pa.schema([("token", pa.int64()), ("feature", pa.int32()), ("value", pa.float32())])


def tokens_schema():
    import pyarrow as pa

    return pa.schema([("token", pa.int64()), ("token_id", pa.int32()), ("context", pa.int64()),
                      ("position", pa.int32())])


def part_names(k: int) -> tuple[str, str]:
    """(triples file, tokens file) of part k."""
    return f"triples-{k:05d}.parquet", f"tokens-{k:05d}.parquet"


def generate_command(model: str, layer: int | str, *, sae_path: str | os.PathLike | None = None,
                     base_dir: str | os.PathLike | None = None) -> str:
    """The command line that makes the occurrence dataset of (model, layer), for messages."""
    return OccurrencesConfig(model_name=str(model), layers=(layer,), sae_path=None if sae_path is None else str(sae_path),
                             base_dir=None if base_dir is None else str(base_dir)).command()


EncodeFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""encode(contexts int64[b], token_ids int[b, ctx_len]) -> (token int64, feature int32, value float32),
sorted by (token, feature), global token indices, only values > threshold."""


def feature_triples(feats: Any, contexts: np.ndarray, positions: int, ctx_len: int, threshold: float = THRESHOLD
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The triples of SAE activations `feats` [b * positions, F] (a torch tensor) of contexts `contexts` [b]:
    every (global token index, feature, value) with value > threshold. The nonzero pairs come out of a
    row-major scan of the activation matrix, hence sorted by token then feature."""
    rows, feature = (feats > threshold).nonzero(as_tuple=True)
    value = feats[rows, feature]
    rows = rows.cpu().numpy()
    token = np.asarray(contexts, np.int64)[rows // positions] * ctx_len + rows % positions
    return (token.astype(np.int64), feature.cpu().numpy().astype(np.int32),
            value.float().cpu().numpy().astype(np.float32))
