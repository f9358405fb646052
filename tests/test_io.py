"""Artifact IO: the restricted unpickler on the paper's cluster files, atomic writes, permissions."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import pytest

from multid.config import REPO_ROOT
from multid.errors import UserError
from multid.io import load_plain_pickle, save_json, write_text_atomic

pytestmark = pytest.mark.unit

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (the paper's cluster files) is absent")

# The paper's Figure 1 clusters: GPT-2 layer-7 SAE (upstream README) and the Mistral layer-8 ones.
GPT2_DAYS = [2592, 4445, 4663, 4733, 6531, 8179, 9566, 20927, 24185]
GPT2_MONTHS = [3977, 4140, 5993, 7299, 9104, 9401, 10449, 11196, 12661, 14715, 17068, 17528, 19589, 21033, 22043, 23304]
GPT2_YEARS = [1052, 2753, 4427, 6382, 8314, 9576, 9606, 13551, 19734, 20349]
MISTRAL_DAYS = [398, 20629, 23936, 31484, 35234, 52464, 54166]


@needs_shared
def test_gpt2_cluster_file_loads_without_code_and_holds_the_readme_clusters():
    clusters = load_plain_pickle(SHARED_DATA / "gpt-2_layer_7_clusters_spectral_n1000.pkl")
    assert isinstance(clusters, dict) and len(clusters) == 1000
    assert sorted(clusters[138]) == GPT2_DAYS and sorted(clusters[251]) == GPT2_MONTHS and sorted(clusters[212]) == GPT2_YEARS
    members = sorted(feature for cluster in clusters.values() for feature in cluster)
    assert members == list(range(24576))  # every SAE feature exactly once


@needs_shared
def test_mistral_cluster_file_holds_the_figure1_clusters():
    clusters = load_plain_pickle(SHARED_DATA / "mistral_layer_8_clusters_cutoff_0.5.pkl")
    assert len(clusters) == 53519 and sum(len(cluster) for cluster in clusters) == 65536
    assert clusters[61] == [63]  # unfiltered index 61 is a singleton (upstream's README pitfall)
    filtered = [cluster for cluster in clusters if len(cluster) > 1]
    assert len(filtered) == 2789 and sorted(filtered[61]) == MISTRAL_DAYS and len(filtered[832]) == 21


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(a=1)))  # any global, even a harmless one, is refused
    with pytest.raises(UserError, match="refusing to load collections.OrderedDict"):
        load_plain_pickle(path)
    path.write_bytes(pickle.dumps({1: [2, 3]}))
    assert load_plain_pickle(path) == {1: [2, 3]}


def test_atomic_writes_leave_no_temp_file_and_usual_permissions(tmp_path):
    target = save_json(tmp_path / "sub" / "a.json", {"x": 1})
    assert target.read_text().strip().startswith("{")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(ZeroDivisionError):
        from multid.io import atomic_path

        with atomic_path(tmp_path / "sub" / "b.txt") as tmp:
            tmp.write_text("half")
            raise ZeroDivisionError
    assert sorted(path.name for path in (tmp_path / "sub").iterdir()) == ["a.json"]
    write_text_atomic(target, "replaced")
    assert target.read_text() == "replaced"


@pytest.mark.unit
def test_save_figure_writes_the_same_pdf_bytes_twice_and_can_close(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multid.io import save_figure

    paths = []
    for name in ("a.pdf", "b.pdf"):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        paths.append(save_figure(fig, tmp_path / name, close=True))
        assert not plt.fignum_exists(fig.number)
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.unit
def test_a_figure_on_a_full_disk_names_the_figure_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import builtins
    import errno

    from matplotlib.figure import Figure

    from multid.errors import cli_entry
    from multid.io import save_figure

    fig = Figure()
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and str(file).endswith(".tmp"):
            def no_space(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            handle.write = no_space
        return handle

    monkeypatch.setattr(builtins, "open", full_open)

    @cli_entry
    def draw():
        save_figure(fig, tmp_path / "figure.pdf")

    with pytest.raises(SystemExit):
        draw()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on the device while writing") and "figure.pdf" in err
    assert list(tmp_path.iterdir()) == []
