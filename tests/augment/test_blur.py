"""The blurs against NumPy: an exact Gaussian and Pillow's GaussianBlur (BoxBlur.c) re-written in float64."""

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import augment


def _images(batch=4, size=20, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    return images if dtype == np.uint8 else images.astype(np.float32) / 255.0


def test_blur_small_sigma_is_identity_large_sigma_smooths():
    x = _images(batch=2, size=24, dtype=np.float32)
    out = augment.gaussian_blur(x, tf.constant([0.1, 2.0]), radius=3).numpy()
    np.testing.assert_allclose(out[0], x[0], atol=1e-4)
    assert out[1].var() < 0.3 * x[1].var()
    np.testing.assert_allclose(out[1].mean(), x[1].mean(), atol=0.02)
    flat = np.full((1, 12, 12, 3), 0.3, np.float32)
    np.testing.assert_allclose(augment.gaussian_blur(flat, [1.5], radius=2).numpy(), flat, atol=1e-6)


def test_blur_kernel_size_tracks_image_size():
    assert 2 * augment.blur_radius(224) + 1 == 23
    assert 2 * augment.blur_radius(32) + 1 == 3
    # The recipe's blur (PIL's) has the support of its largest sigma, whatever the image size.
    assert augment.TwoViewAugment(224).blur_radius == augment.TwoViewAugment(32).blur_radius == 6
    assert augment.TwoViewAugment.cifar().blur_prob == 0.0
    assert augment.TwoViewAugment(224).blur_prob == 0.5


# --------------------------------------------------------------------------- PIL's GaussianBlur


def _numpy_pil_box_blur(image, sigma, passes=3):
    """Pillow's BoxBlur.c in float64: `passes` extended box blurs per axis, edge pixels repeated, no rounding.

    `_gaussian_blur_radius` gives the box radius r = l + a; each output pixel is the sum
    of the 2l + 1 nearest pixels plus a times the next one on each side, over 2r + 1.
    """
    sigma2 = sigma * sigma / passes
    whole = np.floor((np.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)
    radius = whole + (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2) / (6 * (sigma2 - (whole + 1) ** 2))
    l = int(whole)
    out = image.astype(np.float64)
    for axis in (1, 0):
        for _ in range(passes):
            n = out.shape[axis]
            padded = np.take(out, np.clip(np.arange(-l - 1, n + l + 1), 0, n - 1), axis=axis)
            total = sum(np.take(padded, np.arange(k, k + n), axis=axis) for k in range(1, 2 * l + 2))
            edges = np.take(padded, np.arange(0, n), axis=axis) + np.take(
                padded, np.arange(2 * l + 2, 2 * l + 2 + n), axis=axis
            )
            out = (total + (radius - l) * edges) / (2 * radius + 1)
    return out


def _textured(size, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    image = (
        128
        + 50 * np.sin(0.11 * x + 0.07 * y)[..., None] * np.array([1.0, 0.6, -0.8])
        + rng.normal(0, 6, (size, size, 3))
    )
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 1.41, 1.5, 2.0])
def test_box_blur_is_pils_box_passes_away_from_the_border(sigma):
    image = _textured(40, 1)
    ours = augment.box_blur(image[None].astype(np.float32), [sigma]).numpy()[0]
    expected = _numpy_pil_box_blur(image, sigma)
    support = augment.box_blur_support(sigma)
    assert support == (7 if sigma < 2**0.5 else 13) // 2
    inner = (slice(support, -support), slice(support, -support))
    np.testing.assert_allclose(ours[inner], expected[inner], atol=2e-3)
    # At the border Pillow repeats the edge of each pass's output, the composed kernel the input's.
    assert np.abs(ours - expected).mean() < 0.25  # levels; the border is half of this 40 px image at sigma 2


@pytest.mark.parametrize("kind", ["textured", "noise"])
def test_box_blur_against_pillows_gaussian_blur(kind):
    """Against the reference's call, `ImageFilter.GaussianBlur(radius=sigma)`, at 224 px: a level or less on average."""
    from PIL import Image, ImageFilter

    image = (
        _textured(224, 2)
        if kind == "textured"
        else np.random.default_rng(3).integers(0, 256, (224, 224, 3)).astype(np.uint8)
    )
    sigmas = [0.1, 0.5, 1.0, 1.5, 2.0]
    ours = augment.box_blur(np.repeat(image[None], len(sigmas), 0).astype(np.float32), sigmas).numpy()
    gaussian = augment.gaussian_blur(np.repeat(image[None], len(sigmas), 0).astype(np.float32), sigmas, 11).numpy()
    for i, sigma in enumerate(sigmas):
        pil = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)), np.float64)
        diff = np.abs(ours[i] - pil)
        inner = diff[8:-8, 8:-8]
        # Pillow rounds each of its six passes to uint8: up to ~1 level on average, 3 at most inside.
        assert diff.mean() < 1.1, (sigma, diff.mean())
        assert inner.max() < 3.5, (sigma, inner.max())
        if kind == "noise" and sigma >= 0.5:
            # The exact Gaussian of the same sigma is farther from the reference.
            assert np.abs(gaussian[i] - pil).mean() > diff.mean()


def test_box_blur_static_width_equals_its_own_and_keeps_flat_images():
    images = _images(batch=3, size=24, dtype=np.float32)
    sigmas = tf.constant([0.3, 1.2, 1.9])
    batched = augment.box_blur(images, sigmas, half_width=9).numpy()  # zero taps beyond each one's support
    for i in range(3):
        np.testing.assert_allclose(batched[i], augment.box_blur(images[i], sigmas[i : i + 1]).numpy(), atol=1e-5)
    flat = np.full((1, 12, 12, 3), 0.3, np.float32)
    np.testing.assert_allclose(augment.box_blur(flat, [1.5]).numpy(), flat, atol=1e-6)
    kernels = augment.box_blur_kernels(sigmas, 9).numpy()
    np.testing.assert_allclose(kernels.sum(axis=1), 1.0, atol=1e-6)
    assert (kernels[:2, :3] == 0).all() and (kernels[2, :3] == 0).all() and (kernels[2, 3] > 0)


@pytest.mark.parametrize("sigma", [0.1, 0.9, 1.41, 1.42, 2.0])
def test_box_blur_image_equals_the_batched_blur(sigma):
    image = _textured(30, 4)[:, :23].astype(np.float32)  # not square
    ours = augment.box_blur_image(image, tf.constant([sigma]), max_sigma=2.0).numpy()
    np.testing.assert_allclose(ours, augment.box_blur(image[None], [sigma]).numpy()[0], atol=1e-3)  # levels
    inner = (slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(ours[inner], _numpy_pil_box_blur(image, sigma)[inner], atol=2e-3)
