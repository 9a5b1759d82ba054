"""The two views (`TwoViewAugment`), evaluation preprocessing and the probe's augmentation."""

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import augment


def _images(batch=4, size=20, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    return images if dtype == np.uint8 else images.astype(np.float32) / 255.0


def _plain(size, **overrides):
    """A TwoViewAugment that only resizes: every probability 0, full-image square crops."""
    kwargs = dict(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, flip_prob=0.0
    )
    kwargs.update(overrides)
    return augment.TwoViewAugment(size, **kwargs)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_views_shape_dtype_range(dtype):
    aug = augment.TwoViewAugment(16)
    v1, v2 = aug(_images(dtype=dtype), tf.constant([1, 2]))
    for v in (v1, v2):
        assert v.shape == (4, 16, 16, 3)
        assert v.dtype == tf.float32
        assert float(tf.reduce_min(v)) >= 0.0 and float(tf.reduce_max(v)) <= 1.0
    assert float(tf.reduce_mean(tf.abs(v1 - v2))) > 0.02


def test_same_seed_repeats_other_seed_differs():
    aug = augment.TwoViewAugment(16)
    x = _images()
    a = aug(x, tf.constant([5, 6]))
    b = aug(x, tf.constant([5, 6]))
    c = aug(x, tf.constant([5, 7]))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.allclose(a[0].numpy(), c[0].numpy())


def test_every_image_draws_its_own_parameters():
    x = np.repeat(_images(batch=1, size=64), 6, axis=0)
    crops = augment.TwoViewAugment(16, jitter_prob=0, grayscale_prob=0, blur_prob=0, flip_prob=0).view(x, [3, 4])
    assert len({crops[i].numpy().tobytes() for i in range(6)}) == 6
    jittered = augment.random_color_jitter(np.repeat(_images(batch=1, dtype=np.float32), 6, axis=0), [3, 4], prob=1.0)
    assert len({jittered[i].numpy().tobytes() for i in range(6)}) == 6


def test_without_randomness_a_view_is_a_resize():
    x = _images(size=24)
    for size in (16, 40):
        # Antialiased when it shrinks (16 px), plain bilinear when it enlarges (40 px).
        expected = tf.image.resize(x.astype(np.float32) / 255.0, [size, size], method="bilinear", antialias=True)
        np.testing.assert_allclose(_plain(size).view(x, [0, 0]).numpy(), expected.numpy(), atol=1e-5)


def test_flip_prob_one_mirrors_and_single_images_work():
    x = _images(batch=1, size=24)
    flipped = _plain(16, flip_prob=1.0).view(x[0], [0, 0])
    assert flipped.shape == (16, 16, 3)
    expected = tf.image.resize(x[0].astype(np.float32) / 255.0, [16, 16], antialias=True)[:, ::-1]
    np.testing.assert_allclose(flipped.numpy(), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(augment.random_flip(x, [1, 1], prob=1.0).numpy(), x[:, :, ::-1])


def test_grayscale_prob_one_makes_channels_equal():
    v = _plain(16, grayscale_prob=1.0).view(_images(), [1, 1]).numpy()
    np.testing.assert_allclose(v[..., 0], v[..., 1], atol=1e-6)
    np.testing.assert_allclose(v[..., 0], v[..., 2], atol=1e-6)
    assert v.std() > 0.1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(jitter_prob=1.5), "jitter_prob"),
        (dict(grayscale_prob=-0.1), "grayscale_prob"),
        (dict(blur_prob=2.0), "blur_prob"),
        (dict(flip_prob=-1.0), "flip_prob"),
        (dict(crop_scale=(0.8, 0.2)), "crop_scale"),
        (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
        (dict(crop_scale=(0.5, 1.5)), "crop_scale"),
        (dict(crop_ratio=(4 / 3, 3 / 4)), "crop_ratio"),
        (dict(crop_ratio=(-1.0, 1.0)), "crop_ratio"),
        (dict(blur_sigma=(2.0, 0.1)), "blur_sigma"),
        (dict(jitter_strength=(0.4, 0.4, 0.4)), "jitter_strength"),
        (dict(jitter_strength=(0.4, -0.4, 0.4, 0.1)), "jitter_strength"),
        (dict(image_size=0), "image_size"),
    ],
)
def test_invalid_parameters_are_named(kwargs, name):
    kwargs.setdefault("image_size", 32)
    with pytest.raises(ValueError, match=name):
        augment.TwoViewAugment(**kwargs)


def test_runs_inside_tf_data_with_unknown_batch():
    aug = augment.TwoViewAugment(12)
    ds = tf.data.Dataset.from_tensor_slices(_images(batch=5)).batch(2)
    ds = ds.map(lambda x: aug(x, tf.constant([0, 1], tf.int64)))
    shapes = [tuple(v1.shape) for v1, _ in ds]
    assert shapes == [(2, 12, 12, 3), (2, 12, 12, 3), (1, 12, 12, 3)]


def test_eval_preprocess_center_crop_and_plain_resize():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 30, 40, 3)).astype(np.uint8)
    out = augment.eval_preprocess(x, 16).numpy()
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.float32
    # Shorter side 30 -> 18 (16 / 0.875), longer 40 -> 24, then the central 16 x 16.
    resized = tf.image.resize(x.astype(np.float32) / 255.0, [18, 24], antialias=True).numpy()
    np.testing.assert_allclose(out, resized[:, 1:17, 4:20], atol=1e-5)
    single = augment.eval_preprocess(x[0], 16, center_crop=False).numpy()
    assert single.shape == (16, 16, 3)
    np.testing.assert_allclose(
        single, tf.image.resize(x[0].astype(np.float32) / 255.0, [16, 16], antialias=True).numpy(), atol=1e-5
    )
    same = x[:, :16, :16]
    np.testing.assert_allclose(augment.eval_preprocess(same, 16, center_crop=False).numpy(), same / 255.0, atol=1e-6)


def test_probe_augment_shapes_and_determinism():
    x = _images(batch=3, size=24)
    a = augment.probe_augment(x, [4, 4], 16)
    b = augment.probe_augment(x, [4, 4], 16)
    c = augment.probe_augment(x, [4, 5], 16)
    assert a.shape == (3, 16, 16, 3) and a.dtype == tf.float32
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())
    full = augment.probe_augment(x, [4, 4], 16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0)
    np.testing.assert_allclose(full.numpy(), tf.image.resize(x / 255.0, [16, 16], antialias=True).numpy(), atol=1e-5)
