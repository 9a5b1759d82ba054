"""Random colour inversion (simsiam_tf.augment.invert) against NumPy's 1 - x."""

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import augment
from simsiam_tf import config as config_lib
from simsiam_tf.augment import invert, per_image, views
from simsiam_tf.augment.images import GATHER, SELECT


def _images(n=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 6, 6, 3)).astype(np.float32)


def test_each_image_is_itself_or_its_negative_at_the_drawn_rate():
    images = _images(400)
    out = invert.random_invert(images, tf.constant([4, 2]), 0.3).numpy()
    same = np.all(out == images, axis=(1, 2, 3))
    negative = np.all(np.abs(out - (1.0 - images)) < 1e-7, axis=(1, 2, 3))
    assert np.all(same ^ negative)
    assert 0.24 < negative.mean() < 0.36  # 400 draws at p = 0.3: sd 0.023
    np.testing.assert_array_equal(out, invert.random_invert(images, tf.constant([4, 2]), 0.3).numpy())
    assert np.array_equal(invert.random_invert(images, tf.constant([4, 2]), 0.0).numpy(), images)
    np.testing.assert_allclose(invert.random_invert(images, tf.constant([4, 2]), 1.0).numpy(), 1.0 - images)


def test_the_paths_agree_and_off_the_views_are_unchanged():
    crops = (_images(8, 1) * 255).astype(np.uint8)
    seed = tf.constant([3, 5])
    aug = augment.TwoViewAugment(image_size=6, invert_prob=0.5, blur_prob=0.5, grayscale_prob=0.3)
    batched = views.appearance(crops, seed, aug, GATHER).numpy()
    np.testing.assert_allclose(views.appearance(crops, seed, aug, SELECT).numpy(), batched, atol=1e-5)
    # The per-image path (one image, ops run only when drawn) is the batch path on a batch of one.
    for k in range(4):
        np.testing.assert_allclose(
            per_image.appearance(crops[k], seed, aug).numpy(),
            views.appearance(crops[k : k + 1], seed, aug, GATHER).numpy()[0],
            atol=1e-5,
        )
    plain = augment.TwoViewAugment(image_size=6, blur_prob=0.5, grayscale_prob=0.3)
    off = augment.TwoViewAugment(image_size=6, blur_prob=0.5, grayscale_prob=0.3, invert_prob=0.0)
    np.testing.assert_array_equal(off.appearance(crops, seed).numpy(), plain.appearance(crops, seed).numpy())


def test_inversion_commutes_with_grayscale():
    images = _images(4, 2)
    gray = (images @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].repeat(3, axis=-1)
    np.testing.assert_allclose(augment.grayscale(invert.invert(images), channels=3).numpy(), 1.0 - gray, atol=1e-6)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_invert_prob_is_refused(value):
    with pytest.raises(ValueError, match="invert_prob must be"):
        config_lib.AugmentConfig(invert_prob=value).validate()
    with pytest.raises(ValueError, match="invert_prob must be a probability"):
        augment.TwoViewAugment(image_size=8, invert_prob=value)


def test_the_setting_reaches_the_views():
    from simsiam_tf import builders

    config = config_lib.PretrainConfig(augment=config_lib.AugmentConfig(invert_prob=0.5))
    assert builders.make_augment(config).invert_prob == 0.5
