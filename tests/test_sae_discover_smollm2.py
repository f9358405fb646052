"""`make discover` in small: the whole offline pipeline on SmolLM2 over the first 50 contexts of the
local corpus, with a small SAE; every stage runs, the report holds real numbers, and the figures exist."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from multid.config import REPO_ROOT

pytestmark = [pytest.mark.acceptance, pytest.mark.smollm2]


def test_discover_small_runs_every_stage(smollm2_model, tmp_path):
    from multid.io import load_json

    del smollm2_model  # the fixture converts SmolLM2 into the shared models folder
    argv = ["--base_dir", str(tmp_path), "--max_tokens", str(50 * 128), "--training_tokens", "16384",
            "--expansion", "1", "--n_clusters", "6", "--sample_limit", "300", "--calendar_text", "none"]  # no network
    done = subprocess.run([sys.executable, "-m", "multid.discover", *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "[8/8] figures" in out and "$ python sae_multid_feature_discovery/clustering.py" in out
    run = next((tmp_path / "sae").glob("smollm2_layer8_*"))
    report = load_json(run / "discover_report.json")

    corpus = report["corpus"]
    assert corpus["total"]["tokens"] > 500_000 and corpus["per_source"]["news"]["passages"] > 400
    assert sum(corpus["month_tokens"].values()) > 1000 and sum(corpus["day_tokens"].values()) > 100

    sae = report["sae"]
    assert sae["d_sae"] == 576 and sae["training_tokens"] == 16384 and sae["train_contexts"] + sae["eval_contexts"] == 50
    for key in ("l0", "explained_variance", "dead_fraction", "ce_loss_recovered"):
        assert math.isfinite(sae[key]), key
    assert sae["ce_loss_zero_ablation"] > sae["ce_loss_clean"]
    assert report["occurrences"]["contexts"] == 50 and report["occurrences"]["pairs"] > 0

    named = report["named_clusters"]["spectral"]
    assert set(named) <= {"days", "months", "years", "day_abbr", "month_abbr", "weekday", "month"} and "years" in named
    assert "verdict (targets:" in out and "one SAE seed: a verdict needs several" in out
    profile = load_json(report["layer_profile"]["path"])
    assert len(profile["layers"]) == 30 and profile["contexts"] <= 50 and Path(report["layer_profile"]["figure"]).is_file()
    assert all(0 < e["purity"] <= 1 and 2 <= e["size"] for e in named.values())
    for path in report["figures"]:
        assert Path(path).is_file(), path
    assert any(p.endswith(".html") for p in report["figures"])
