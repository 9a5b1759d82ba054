"""The per-image photometric stage (simsiam_tf.augment.per_image) against NumPy and its draw probabilities."""

import numpy as np
import pytest
import tensorflow as tf
from test_photometric import numpy_adjust_hue

from simsiam_tf import augment
from simsiam_tf.augment import per_image, photometric

GRAY = np.array(augment.GRAY_WEIGHTS)


def _numpy_jitter(image, factors, order):
    """torchvision's ColorJitter ops in the given order, float64, clipping after each."""
    x = image.astype(np.float64)
    for op in order:
        f = factors[op]
        if op == 0:
            x = np.clip(f * x, 0, 1)
        elif op == 1:
            x = np.clip(f * x + (1 - f) * (x @ GRAY).mean(), 0, 1)
        elif op == 2:
            x = np.clip(f * x + (1 - f) * (x @ GRAY)[..., None], 0, 1)
        else:
            x = numpy_adjust_hue(x, f)
    return x


@pytest.mark.parametrize("compiled", [False, True], ids=["tf", "xla"])
@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]])
def test_jitter_matches_numpy_in_each_order(order, compiled):
    image = np.random.default_rng(0).uniform(0, 1, (12, 12, 3)).astype(np.float32)
    factors = [1.3, 0.7, 1.4, -0.08]
    # appearance runs the XLA-compiled jitter: the same maths, fused
    jitter = photometric.compiled_jitter if compiled else photometric.jitter
    ours = jitter(tf.constant(image), tf.constant(factors), tf.constant(order)).numpy()
    np.testing.assert_allclose(ours, _numpy_jitter(image, factors, order), atol=1e-5)


def test_no_draws_is_the_float_image():
    image = np.random.default_rng(1).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    aug = augment.TwoViewAugment(10, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    out = per_image.appearance(image, tf.constant([1, 2]), aug).numpy()
    np.testing.assert_allclose(out, image / 255.0, atol=1e-7)
    assert out.dtype == np.float32


def test_same_seed_repeats_and_uint8_equals_float():
    image = np.random.default_rng(2).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    aug = augment.TwoViewAugment(16)
    a = per_image.appearance(image, tf.constant([5, 6]), aug).numpy()
    b = per_image.appearance(image.astype(np.float32) / 255.0, tf.constant([5, 6]), aug).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    outs = [per_image.appearance(image, tf.constant([5, s]), aug).numpy() for s in range(7, 12)]
    assert any(not np.allclose(a, o) for o in outs)


def _fraction(aug, changed, n=400):
    image = tf.constant(np.random.default_rng(3).uniform(0.1, 0.9, (16, 16, 3)).astype(np.float32))
    run = tf.function(lambda s: per_image.appearance(image, tf.stack([s, tf.constant(9, tf.int64)]), aug))
    return np.mean([changed(image.numpy(), run(tf.constant(s, tf.int64)).numpy()) for s in range(n)])


def test_draw_probabilities():
    """Jitter with p=0.8, grayscale with p=0.2, blur with p=0.5, each drawn per image (3-sigma bounds at n=400)."""
    jitter_only = augment.TwoViewAugment(16, jitter_strength=(0.4, 0.0, 0.0, 0.0), grayscale_prob=0.0, blur_prob=0.0)
    gray_only = augment.TwoViewAugment(16, jitter_prob=0.0, grayscale_prob=0.2, blur_prob=0.0)
    blur_only = augment.TwoViewAugment(16, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.5)

    def differs(x, y):
        return not np.allclose(x, y, atol=1e-6)

    assert abs(_fraction(jitter_only, differs) - 0.8) < 0.06
    assert abs(_fraction(gray_only, lambda x, y: np.allclose(y[..., 0], y[..., 2])) - 0.2) < 0.06
    assert abs(_fraction(blur_only, differs) - 0.5) < 0.075


def test_grayscale_output_is_luma_in_three_channels():
    image = np.random.default_rng(4).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    aug = augment.TwoViewAugment(8, jitter_prob=0.0, grayscale_prob=1.0, blur_prob=0.0)
    out = per_image.appearance(image, tf.constant([0, 0]), aug).numpy()
    np.testing.assert_allclose(out, np.repeat((image @ GRAY)[..., None], 3, -1), atol=1e-6)


def test_jitter_keeps_pixels_in_the_unit_range_without_a_clip_after_the_hue():
    """Saturated, grey, black, white and almost-white pixels under the strongest factors and every hue shift."""
    rng = np.random.default_rng(5)
    image = rng.random((24, 24, 3)).astype(np.float32)
    image[:4] = np.round(image[:4])
    image[4:8] = np.float32(np.nextafter(np.float32(1.0), np.float32(0.0)))
    image[8:12] = image[8:12, :, :1]
    image[12:16, :, 1] = 0.0
    for delta in np.linspace(-0.5, 0.5, 21):
        for order in ([3, 0, 1, 2], [0, 1, 2, 3], [2, 3, 1, 0]):
            for factors in ([1.4, 1.4, 1.4, delta], [0.6, 0.6, 0.6, delta]):
                out = photometric.jitter(
                    tf.constant(image), tf.constant(factors, tf.float32), tf.constant(order)
                ).numpy()
                assert 0.0 <= out.min() and out.max() <= 1.0, (delta, order, factors)


def test_transposed_crops_give_the_same_views():
    """Every op of the stage commutes with swapping the axes: a transposed crop comes back as the same view."""
    image = np.random.default_rng(2).random((20, 14, 3)).astype(np.float32)
    aug = augment.TwoViewAugment(16, blur_prob=0.5)
    for k in range(16):
        seed = tf.constant([k, 3], tf.int64)
        plain = per_image.appearance(image, seed, aug).numpy()
        swapped = per_image.appearance(np.transpose(image, [1, 0, 2]), seed, aug, transposed=True).numpy()
        assert swapped.shape == plain.shape == (20, 14, 3)
        np.testing.assert_allclose(swapped, plain, atol=1e-6)
