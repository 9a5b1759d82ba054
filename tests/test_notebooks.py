"""The Colab notebooks: their layout, and each one run top to bottom in its fast setting.

The runs execute every notebook in memory with nbclient (kernel python3, working
directory colab/, SIMSIAM_NOTEBOOK_FAST=1) and fail on any error. The notebooks' run
directories go to one temporary folder (SIMSIAM_NOTEBOOK_RUNS), shared by the three in
the order a user runs them: the later ones reuse the pretraining run of the first, as
RUNS_DIR lets users share runs on Colab.
"""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

import simsiam_tf

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"
# The first three share one pretraining run (their parameters cells hold the same settings).
SHARED_RUN = ("pretrain_and_probe.ipynb", "pair_verification.ipynb", "export_and_serve.ipynb")
NOTEBOOKS = SHARED_RUN + ("your_own_images.ipynb",)
# No repository address is established, so the notebooks say how to open them on Colab by upload
# and install the package from its uploaded wheel.
UPLOAD = "*File > Upload notebook*"
WHEEL = 'WHEEL = "simsiam_tf-{}-py3-none-any.whl"'
CELL_TIMEOUT = 600
# Figures each notebook draws, and text its outputs must show.
MIN_IMAGES = {
    "pretrain_and_probe.ipynb": 4,
    "pair_verification.ipynb": 5,
    "export_and_serve.ipynb": 2,
    "your_own_images.ipynb": 1,
}
EXPECTED_TEXT = {
    "pretrain_and_probe.ipynb": ("kNN top-1", "linear probe top-1"),
    "pair_verification.ipynb": ("roc_auc", "threshold (chosen on validation pairs)"),
    "export_and_serve.ipynb": ("'verify'", "precision@1"),
    "your_own_images.ipynb": ("kNN top-1", "held-out images embedded; precision at 5", "files_sha256"),
}


def _read(name):
    return nbformat.read(COLAB / name, as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    assert cells[0].cell_type == "code"
    return cells[0]


def _parameters(nb, monkeypatch, fast, runs_dir=None):
    """The variables the parameters cell sets in a given environment."""
    if fast:
        monkeypatch.setenv("SIMSIAM_NOTEBOOK_FAST", "1")
    else:
        monkeypatch.delenv("SIMSIAM_NOTEBOOK_FAST", raising=False)
    if runs_dir is None:
        monkeypatch.delenv("SIMSIAM_NOTEBOOK_RUNS", raising=False)
    else:
        monkeypatch.setenv("SIMSIAM_NOTEBOOK_RUNS", str(runs_dir))
    namespace = {}
    exec(compile(_parameters_cell(nb).source, "parameters", "exec"), namespace)
    return namespace


def test_the_notebooks_are_these():
    assert sorted(p.name for p in COLAB.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    nbformat.validate(_read(name))
    for cell in _code(_read(name)):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_with_the_colab_upload_note_and_runtime_note(name):
    first = _read(name).cells[0]
    assert first.cell_type == "markdown"
    assert UPLOAD in first.source and "pip wheel --no-deps -w dist ." in first.source
    assert "colab.research.google.com/github" not in first.source
    for words in ("Runtime > Change runtime type", "GPU", "TPU", "STRATEGY", "PRECISION"):
        assert words in first.source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_installs_on_colab_only(name):
    install = _code(_read(name))[0].source
    assert WHEEL.format(simsiam_tf.__version__) in install
    assert 'if "google.colab" in sys.modules:' in install
    assert '!pip install -q "{WHEEL}"' in install


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_the_api_not_flags(name):
    nb = _read(name)
    code = "\n".join(c.source for c in _code(nb))
    assert "absl" not in code and "FLAGS" not in code
    assert "from simsiam_tf" in code
    # The package is imported, not pasted: no notebook defines a class.
    assert "\nclass " not in "\n" + code


@pytest.mark.parametrize("name", SHARED_RUN)
def test_parameters_cell_holds_both_settings(name, monkeypatch, tmp_path):
    nb = _read(name)
    assert 'DATASET = "synthetic_scenes"  # or "cifar10"\n' in _parameters_cell(nb).source
    fast = _parameters(nb, monkeypatch, fast=True, runs_dir=tmp_path)
    assert fast["FAST"] is True and fast["RUNS_DIR"] == str(tmp_path) and fast["DATASET"] == "synthetic_scenes"
    full = _parameters(nb, monkeypatch, fast=False)
    assert full["FAST"] is False and full["RUNS_DIR"] is None

    small = fast["FAST_PRETRAIN"]
    assert small["data.image_size"] <= 16 and small["model.width_multiplier"] <= 0.125 and small["model.dim"] <= 32
    assert small["data.num_train_examples"] <= 200 and small["epochs"] <= 3
    assert set(fast["FULL_PRETRAIN"]) == {"synthetic_scenes", "cifar10"}
    assert fast["FULL_PRETRAIN"]["cifar10"]["model.width_multiplier"] == 1.0


def test_notebooks_pretrain_alike(monkeypatch):
    """Same pretraining settings everywhere, so that the notebooks can share one run."""
    settings = []
    for name in SHARED_RUN:
        params = _parameters(_read(name), monkeypatch, fast=True)
        settings.append((params["FAST_PRETRAIN"], params["FULL_PRETRAIN"]))
    assert all(s == settings[0] for s in settings)


@pytest.mark.parametrize("name", SHARED_RUN)
def test_settings_make_valid_configs(name, monkeypatch, tmp_path):
    """Every setting names real config fields and gives a config that validates."""
    from simsiam_tf import config as config_lib

    params = _parameters(_read(name), monkeypatch, fast=True, runs_dir=tmp_path)
    pretrain = [("synthetic_scenes", params["FAST_PRETRAIN"])] + list(params["FULL_PRETRAIN"].items())
    for dataset, changes in pretrain:
        config_lib.replace(config_lib.PretrainConfig(), **{"data.dataset": dataset, **changes}).validate()
    for key in ("FAST_VERIFY", "FULL_VERIFY"):
        if key in params:
            changes = {"init_from": str(tmp_path / "pretrain"), "runtime.model_dir": str(tmp_path / "verify")}
            config_lib.replace(config_lib.VerifyConfig(), **changes, **params[key]).validate()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_fast_setting(name, runs_dir, monkeypatch):
    monkeypatch.setenv("SIMSIAM_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("SIMSIAM_NOTEBOOK_RUNS", str(runs_dir))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline figures
    before = sorted(os.listdir(COLAB))
    nb = _read(name)

    NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(COLAB)}}
    ).execute()

    outputs = [o for cell in _code(nb) for o in cell.outputs]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= MIN_IMAGES[name]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for expected in EXPECTED_TEXT[name]:
        assert expected in text
    assert sorted(os.listdir(COLAB)) == before, "the notebook wrote next to itself"
    run = "own_images_pretrain" if name == "your_own_images.ipynb" else "pretrain_synthetic_scenes"
    assert (runs_dir / run / "metrics.json").is_file()
