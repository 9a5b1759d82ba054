"""A tool's console at export: TensorFlow's INFO lines from `tf.saved_model.save` are held back,
and absl's `--verbosity=1` brings them back.

Oracle: the exact lines TensorFlow 2.21 logs while saving (signature_serialization's
"Function `embed` contains input name(s) ...", builder_impl's "Assets written to: ..." and
fingerprinting_utils' "Writing fingerprint to ...").
"""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

SAVE_INFO = ("contains input name(s)", "Assets written to:", "Writing fingerprint to")

TINY = [
    "--width_multiplier=0.125",
    "--dim=32",
    "--pred_dim=16",
    "--image_size=16",
    "--num_train_examples=32",
    "--num_eval_examples=16",
    "--batch_size=16",
    "--epochs=1",
    "--evaluate=false",
    "--knn_every=0",
    "--verbose=0",
]


def _tool(module, *args):
    result = subprocess.run(
        [sys.executable, "-m", f"simsiam_tf.cli.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_export_is_quiet_by_default_and_verbose_with_the_verbosity_flag(tmp_path):
    run = tmp_path / "run"
    quiet = _tool("pretrain", *TINY, f"--model_dir={run}", "--export=true")
    assert (run / "export" / "saved_model").is_dir()
    assert f"run directory: {run}" in quiet  # the package's own output is still there
    for line in SAVE_INFO:
        assert line not in quiet, quiet[-3000:]

    # The same writer, called by simsiam-export with absl's --verbosity=1.
    verbose = _tool("export", f"--model_dir={run}", f"--output_dir={tmp_path / 'again'}", "--verbosity=1")
    assert (tmp_path / "again" / "saved_model").is_dir()
    for line in SAVE_INFO:
        assert line in verbose, verbose[-3000:]
