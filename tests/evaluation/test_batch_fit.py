"""The small-dataset rule: a recipe's batch halved until an epoch has enough steps."""

import pytest

from simsiam_tf.evaluation import batch_fit


def test_imagenet_batch_on_the_demo_set_becomes_128():
    # 5,000 images: 4096 gives 1 step; 256 gives 19 (< 20); 128 gives 39.
    fit = batch_fit.fit_batch_size(4096, 5000)
    assert (fit.batch_size, fit.steps_per_epoch, fit.changed) == (128, 39, True)
    assert fit.warning is None
    assert fit.message == (
        "batch 4096 would leave 1 steps per epoch on 5000 training images; using batch 128 "
        "(39 steps per epoch; set --batch_size to override)"
    )


def test_counting_the_last_smaller_batch_allows_256_on_the_demo_set():
    # ceil(5000 / 256) = 20 steps, ceil(5000 / 512) = 10.
    assert batch_fit.fit_batch_size(4096, 5000, drop_remainder=False).batch_size == 256


def test_large_sets_and_small_batches_are_left_alone():
    fit = batch_fit.fit_batch_size(4096, 1_281_167)
    assert (fit.batch_size, fit.steps_per_epoch, fit.message, fit.warning) == (4096, 312, None, None)
    assert batch_fit.fit_batch_size(256, 5120).batch_size == 256  # exactly 20 steps
    assert batch_fit.fit_batch_size(16, 100).batch_size == 16  # at the floor already


def test_tiny_sets_get_the_floor_of_16():
    fit = batch_fit.fit_batch_size(256, 200)
    assert (fit.batch_size, fit.steps_per_epoch) == (16, 12)


def test_a_batch_chosen_by_the_user_is_kept_with_a_warning_naming_the_fix():
    fit = batch_fit.fit_batch_size(4096, 5000, explicit=True)
    assert (fit.batch_size, fit.steps_per_epoch, fit.message) == (4096, 1, None)
    assert fit.warning == (
        "--batch_size=4096 leaves 1 steps per epoch on 5000 training images (fewer than 20); "
        "--batch_size=128 would give 39"
    )


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="empty"):
        batch_fit.fit_batch_size(256, 0)
    with pytest.raises(ValueError, match="positive"):
        batch_fit.fit_batch_size(0, 100)
