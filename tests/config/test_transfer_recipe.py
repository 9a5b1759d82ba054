"""flags/transfer_small_images.cfg is flags/small_images_28.cfg started from backbone weights, with half the steps."""

import os

from simsiam_tf.config import flags as config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flags(name):
    return config_flags.read_flags_file(os.path.join(ROOT, "flags", name))


def test_the_transfer_recipe_differs_from_the_small_image_recipe_only_in_its_start_and_length():
    scratch, transfer = _flags("small_images_28.cfg"), _flags("transfer_small_images.cfg")
    changed = {k for k in scratch.keys() | transfer.keys() if scratch.get(k) != transfer.get(k)}
    assert changed == {"init_from", "train_steps", "model_dir"}
    assert transfer["init_from"].endswith("encoder.weights.h5")
    assert int(transfer["train_steps"]) * 2 == int(scratch["train_steps"])
