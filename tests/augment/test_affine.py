"""The random affine transform (simsiam_tf.augment.affine) against PIL's Image.transform and NumPy shifts and rotations."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simsiam_tf import augment
from simsiam_tf import config as config_lib
from simsiam_tf.augment import affine


def _pil_warp(image, inverse, resample):
    """PIL's affine warp of a float [H, W] image (mode "F"), outside the image 0."""
    h, w = image.shape
    pil = Image.fromarray(image.astype(np.float32), mode="F")
    data = tuple(float(v) for v in np.asarray(inverse).reshape(-1))
    return np.asarray(pil.transform((w, h), Image.Transform.AFFINE, data, resample=resample, fillcolor=0.0))


def _matrices(rng, n):
    return affine.forward_matrix(
        rng.uniform(-25, 25, n), rng.uniform(0.8, 1.2, n), rng.uniform(-15, 15, n),
        rng.uniform(-3, 3, n), rng.uniform(-3, 3, n), 20.0, 16.0,
    )  # fmt: skip


def test_nearest_warp_matches_pil():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, 16, 20, 1)).astype(np.float32)
    inverse = affine.inverse_matrix(_matrices(rng, 6)).numpy()
    out = affine.warp(images, inverse, "nearest", "constant").numpy()
    for k in range(6):
        expected = _pil_warp(images[k, ..., 0], inverse[k], Image.Resampling.NEAREST)
        # Only sampling points within float rounding of a pixel boundary may fall on the other side.
        assert np.mean(out[k, ..., 0] != expected) < 0.01


def test_bilinear_warp_matches_pil_inside_the_image():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (4, 16, 20, 1)).astype(np.float32)
    inverse = affine.inverse_matrix(_matrices(rng, 4)).numpy()
    out = affine.warp(images, inverse, "bilinear", "constant").numpy()
    ys, xs = np.mgrid[0:16, 0:20] + 0.5
    for k in range(4):
        expected = _pil_warp(images[k, ..., 0], inverse[k], Image.Resampling.BILINEAR)
        src_x = inverse[k, 0, 0] * xs + inverse[k, 0, 1] * ys + inverse[k, 0, 2]
        src_y = inverse[k, 1, 0] * xs + inverse[k, 1, 1] * ys + inverse[k, 1, 2]
        # Where every bilinear tap is inside the image (PIL and TF treat the border differently).
        inside = (src_x > 1.0) & (src_x < 19.0) & (src_y > 1.0) & (src_y < 15.0)
        assert inside.sum() > 100
        np.testing.assert_allclose(out[k, ..., 0][inside], expected[inside], atol=1e-4)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_integer_translation_is_an_exact_shift(interpolation):
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (1, 12, 10, 3)).astype(np.float32)
    forward = affine.forward_matrix([0.0], [1.0], [0.0], [2.0], [-3.0], 10.0, 12.0)
    out = affine.warp(images, affine.inverse_matrix(forward), interpolation, "constant").numpy()[0]
    expected = np.zeros_like(images[0])
    expected[:9, 2:] = images[0, 3:, :8]  # right by 2, up by 3
    np.testing.assert_allclose(out, expected, atol=1e-6)
    edge = affine.warp(images, affine.inverse_matrix(forward), interpolation, "nearest").numpy()[0]
    padded = np.pad(images[0], ((3, 3), (2, 2), (0, 0)), mode="edge")
    np.testing.assert_allclose(edge, padded[6:18, 0:10], atol=1e-6)


def test_quarter_turn_is_numpy_rot90():
    image = np.arange(8 * 8, dtype=np.float32).reshape(1, 8, 8, 1)
    forward = affine.forward_matrix([90.0], [1.0], [0.0], [0.0], [0.0], 8.0, 8.0)
    out = affine.warp(image, affine.inverse_matrix(forward), "nearest", "constant").numpy()[0, ..., 0]
    np.testing.assert_array_equal(out, np.rot90(image[0, ..., 0]))  # counter-clockwise on screen


def test_double_scale_about_the_centre():
    image = np.arange(8 * 8, dtype=np.float32).reshape(1, 8, 8, 1)
    forward = affine.forward_matrix([0.0], [2.0], [0.0], [0.0], [0.0], 8.0, 8.0)
    out = affine.warp(image, affine.inverse_matrix(forward), "nearest", "constant").numpy()[0, ..., 0]
    # Output pixel (i, j) reads input (2 + i // 2, 2 + j // 2): the central 4x4 block, each pixel doubled.
    np.testing.assert_array_equal(out, np.kron(image[0, 2:6, 2:6, 0], np.ones((2, 2))))


def test_random_affine_draws_per_image_and_repeats_with_its_seed():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (16, 16, 3)).astype(np.float32)
    batch = np.stack([image] * 4)
    op = affine.RandomAffine(translate=0.1, rotate_deg=15, scale=(0.9, 1.1), shear_deg=10)
    seed = tf.constant([5, 7])
    out = op(batch, seed).numpy()
    assert out.shape == batch.shape and out.dtype == np.float32
    assert all(not np.allclose(out[0], out[k]) for k in range(1, 4))
    np.testing.assert_array_equal(out, op(batch, seed).numpy())
    # Each image's own draw: the forward matrices the op drew, applied one by one, give its output.
    forward = op.draw(seed, 4, 16, 16)
    for k in range(4):
        one = affine.warp(batch[k : k + 1], affine.inverse_matrix(forward[k : k + 1]), "bilinear", "nearest")
        np.testing.assert_allclose(out[k], one.numpy()[0], atol=1e-6)
    drawn = forward.numpy()
    assert np.all(np.abs(np.linalg.det(drawn[:, :, :2])) > 0.5)


def test_inactive_affine_is_the_identity_and_keeps_the_crop_stage():
    images = np.random.default_rng(4).integers(0, 256, (3, 20, 20, 3)).astype(np.uint8)
    assert not affine.RandomAffine().active
    plain = augment.TwoViewAugment(image_size=16, blur_prob=0.0)
    np.testing.assert_array_equal(
        plain.crop(images, tf.constant([1, 2])).numpy(),
        augment.random_resized_crop(images, tf.constant([1, 2]), 16, plain.crop_scale, plain.crop_ratio, 0.5).numpy(),
    )


def test_two_view_augment_with_affine_moves_the_crops():
    images = np.random.default_rng(5).integers(0, 256, (3, 20, 20, 3)).astype(np.uint8)
    seed = tf.constant([1, 2])
    aug = augment.TwoViewAugment(image_size=16, blur_prob=0.0, affine_translate=0.1, affine_rotate_deg=10)
    a, b = aug(images, seed)
    assert a.shape == (3, 16, 16, 3) and b.shape == (3, 16, 16, 3)
    assert 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 1.0
    crop_seed, affine_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    crops = augment.random_resized_crop(images, crop_seed, 16, aug.crop_scale, aug.crop_ratio, aug.flip_prob)
    np.testing.assert_allclose(
        aug.crop(images, seed).numpy(), np.clip(aug.affine(crops, affine_seed).numpy(), 0, 1), atol=1e-6
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("affine_translate", 0.6, "affine_translate must be a fraction"),
        ("affine_rotate_deg", -1.0, "affine_rotate_deg must be in"),
        ("affine_shear_deg", 90.0, "affine_shear_deg must be in"),
        ("affine_scale", (1.2, 0.8), "affine_scale must be min,max"),
    ],
)
def test_config_rejects_bad_affine_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        config_lib.AugmentConfig(**{field: value}).validate()


def test_augment_rejects_bad_affine_settings():
    with pytest.raises(ValueError, match="affine scale must be a range"):
        augment.TwoViewAugment(image_size=16, affine_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="fill_mode must be one of"):
        affine.RandomAffine(fill_mode="mirror")
