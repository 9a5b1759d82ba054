"""The checks of a Keras Applications backbone through every tool, for a test module per family.

At 32 px from random init: a few pretraining steps, the linear probe rebuilt from the
run's flags.cfg by the command-line tool, the probe's run exported by simsiam-export,
and the SavedModel loaded in a process that imports TensorFlow only, whose embeddings
equal the package's own encoder on the same images.
"""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import tiny_pretrain_run

from simsiam_tf.config import flags as config_flags
from simsiam_tf.runs import export as export_job

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 32

PLAIN_TF = """
import json, sys
import numpy as np
import tensorflow as tf
images = np.load(sys.argv[2])
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["embed"](images=tf.constant(images))["embedding"].numpy()
np.save(sys.argv[3], out)
print(json.dumps({"simsiam_tf_imported": any(m.startswith("simsiam_tf") for m in sys.modules)}))
"""


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def make_flow(tmp_path_factory, family, train_steps):
    """(family, pretraining run, linear run, export directory) of one family.

    The encoder's BatchNorm moving statistics (momentum 0.9) must come close to the
    batches' within `train_steps`, or its inference-mode features are near constant and
    the tools refuse it as dead (MobileNetV3Small with `--bn_convention=reference`, momentum
    0.9: a spread of 0.79 after 40 steps).
    """
    run_dir = tiny_pretrain_run(
        tmp_path_factory,
        run={
            "model.backbone": f"keras:{family}",
            "model.bn_convention": "reference",
            "batch_size": 8,
            "train_steps": train_steps,
        },
        write_flags=True,
        image_size=SIZE,
        num_train_examples=16,
        num_eval_examples=16,
    )
    linear_dir = str(tmp_path_factory.mktemp("linear"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simsiam_tf.cli.linear",
            f"--init_from={run_dir}",
            f"--model_dir={linear_dir}",
            "--epochs=1",
            "--batch_size=8",
            "--augment=false",
            "--compare_baselines=false",
            "--eval_batch_size=16",
            "--verbose=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    export_dir = export_job.export_run(linear_dir, str(tmp_path_factory.mktemp("export")))
    return family, run_dir, linear_dir, export_dir


def check_the_runs_record_the_backbone_and_the_probe_rebuilds_it(flow):
    family, run_dir, linear_dir, _ = flow
    pretrain_flags = config_flags.read_flags_file(os.path.join(run_dir, "flags.cfg"))
    linear_flags = config_flags.read_flags_file(os.path.join(linear_dir, "flags.cfg"))
    for values in (pretrain_flags, linear_flags):
        assert values["backbone"] == f"keras:{family}"
        assert values["backbone_weights"] == "none"
        assert values["bn_convention"] == "reference"
    with open(os.path.join(linear_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["sanity_check"] == "passed" and 0.0 <= metrics["top1"] <= 1.0


def check_the_saved_model_loads_with_plain_tensorflow_and_embeds_as_the_package(flow, tmp_path):
    _, _, linear_dir, export_dir = flow
    images = _images(4, 1)
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PLAIN_TF,
            os.path.join(export_dir, "saved_model"),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"simsiam_tf_imported": False}
    served = np.load(tmp_path / "out.npy")
    _, parts = export_job.rebuild(export_job.inspect_run(linear_dir))
    own = parts["encoder"](images.astype(np.float32) / 255.0, training=False).numpy()
    assert np.isfinite(served).all() and served.shape == own.shape
    # The serving graph and the eager call run different kernels: float32 rounding, relative to the scale.
    np.testing.assert_allclose(served, own, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(own).max())))
    assert os.path.isfile(os.path.join(export_dir, "encoder.weights.h5"))
