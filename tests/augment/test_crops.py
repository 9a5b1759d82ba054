"""RandomResizedCrop windows, crop-and-resize and the antialiased resize against torchvision's sampler and PIL."""

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import augment


def _images(batch=4, size=20, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    return images if dtype == np.uint8 else images.astype(np.float32) / 255.0


def test_crop_boxes_follow_random_resized_crop():
    top, left, h, w = (t.numpy() for t in augment.crop_boxes([1, 2], 500, 40, 30, (0.2, 0.6), (0.5, 2.0)))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 30).all()
    area = h * w / (40 * 30)
    assert area.min() > 0.17 and area.max() < 0.64
    ratio = w / h
    assert ratio.min() > 0.45 and ratio.max() < 2.2
    assert len(set(zip(top, left))) > 100
    # Impossible request (a 2:1 box covering the whole square): centre crop clamped to the ratio.
    top, left, h, w = (t.numpy() for t in augment.crop_boxes([1, 2], 3, 20, 20, (1.0, 1.0), (2.0, 2.0)))
    np.testing.assert_array_equal(w, [20, 20, 20])
    np.testing.assert_array_equal(h, [10, 10, 10])
    np.testing.assert_array_equal(top, [5, 5, 5])
    np.testing.assert_array_equal(left, [0, 0, 0])


def test_crop_and_resize_matches_resize_of_the_crop():
    x = _images(batch=2, size=24, dtype=np.float32)
    # Windows at least as large as the output: every sample falls inside its window.
    top, left, h, w = [3.0, 0.0], [5.0, 2.0], [12.0, 20.0], [14.0, 22.0]
    boxes = [tf.constant(v) for v in (top, left, h, w)]
    aliased = augment.crop_and_resize(x, *boxes, 12, antialias=False).numpy()
    smooth = augment.crop_and_resize(x, *boxes, 12).numpy()
    for i in range(2):
        crop = x[i, int(top[i]) : int(top[i] + h[i]), int(left[i]) : int(left[i] + w[i])]
        np.testing.assert_allclose(aliased[i], tf.image.resize(crop, [12, 12]).numpy(), atol=1e-5)
        # Antialiased, the kernel reaches past the window; away from its border it is the resize of the crop.
        expected = tf.image.resize(crop, [12, 12], antialias=True).numpy()
        np.testing.assert_allclose(smooth[i, 1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-5)
    assert np.abs(smooth[1] - aliased[1]).max() > 0.05


def _pil_bilinear_weights(in_size, out_size, start=0.0, length=None):
    """Resampling matrix `[out_size, in_size]` of PIL's `Image.resize(..., BILINEAR, box=...)`.

    Written from Pillow's `precompute_coeffs` (libImaging/Resample.c): output pixel `i`
    centres at `start + (i + 0.5) * scale`; the triangle filter (support 1) is widened
    by `max(scale, 1)`; taps outside the image are dropped and the rest renormalised.
    """
    length = in_size if length is None else length
    scale = length / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = start + (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        taps = np.arange(xmin, xmax)
        k = np.maximum(0.0, 1.0 - np.abs((taps - center + 0.5) / filterscale))
        weights[i, xmin:xmax] = k / k.sum()
    return weights


def _pil_resize(image, out_size, top=0, left=0, crop_h=None, crop_w=None):
    rows = _pil_bilinear_weights(image.shape[0], out_size, top, crop_h)
    cols = _pil_bilinear_weights(image.shape[1], out_size, left, crop_w)
    return np.einsum("oh,hwc,pw->opc", rows, image.astype(np.float64), cols)


def test_antialiased_shrink_matches_pil_bilinear():
    rng = np.random.default_rng(7)
    noise = rng.random((2, 48, 40, 3)).astype(np.float32)  # high frequency everywhere
    top, left, h, w = [0.0, 6.0], [0.0, 5.0], [48.0, 32.0], [40.0, 32.0]
    boxes = [tf.constant(v) for v in (top, left, h, w)]
    smooth = augment.crop_and_resize(noise, *boxes, 16).numpy()
    aliased = augment.crop_and_resize(noise, *boxes, 16, antialias=False).numpy()
    # Image 0 is the whole image, shrunk 3x and 2.5x: PIL's resize, borders included.
    np.testing.assert_allclose(smooth[0], _pil_resize(noise[0], 16), atol=1e-5)
    # Image 1 is a 2x shrink of an inner window: PIL's resize with that box (PIL reads
    # the neighbouring pixels through `box` too).
    np.testing.assert_allclose(smooth[1], _pil_resize(noise[1], 16, 6, 5, 32, 32), atol=1e-5)
    # Aliased sampling keeps far more of the noise's variance and misses the reference.
    assert np.abs(aliased[1] - _pil_resize(noise[1], 16, 6, 5, 32, 32)).mean() > 0.05
    assert aliased.std() > 1.5 * smooth.std()


@pytest.mark.parametrize("shape", [(48, 40), (20, 60), (16, 16), (9, 30), (1, 5)])
def test_resize_antialiased_is_pils_resize_and_tf_images_bit_for_bit(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
    ours = augment.resize_antialiased(image, 16).numpy()
    np.testing.assert_allclose(ours, _pil_resize(image, 16), atol=2e-3)  # levels, PIL's resampling in float64
    np.testing.assert_array_equal(ours, tf.image.resize(image, [16, 16], antialias=True).numpy())


def test_antialias_only_matters_where_a_window_shrinks():
    x = _images(batch=3, size=24, dtype=np.float32)
    # Image 0 enlarges, image 1 shrinks in width only, image 2 keeps its size.
    top, left, h, w = [2.0, 0.0, 4.0], [3.0, 1.0, 4.0], [10.0, 12.0, 16.0], [9.0, 22.0, 16.0]
    boxes = [tf.constant(v) for v in (top, left, h, w)]
    flip = tf.constant([True, True, False])
    smooth = augment.crop_and_resize(x, *boxes, 16, flip).numpy()
    aliased = augment.crop_and_resize(x, *boxes, 16, flip, antialias=False).numpy()
    np.testing.assert_allclose(smooth[0], aliased[0], atol=1e-5)
    np.testing.assert_allclose(smooth[2], aliased[2], atol=1e-5)
    assert np.abs(smooth[1] - aliased[1]).max() > 0.05
    # A flipped antialiased crop is the mirror of the unflipped one; uint8 keeps its range.
    unflipped = augment.crop_and_resize(x, *boxes, 16).numpy()
    np.testing.assert_allclose(smooth[1], unflipped[1, :, ::-1], atol=1e-6)
    as_uint8 = augment.crop_and_resize((x * 255).round().astype(np.uint8), *boxes, 16).numpy()
    np.testing.assert_allclose(as_uint8 / 255.0, unflipped, atol=1e-3)
    # No window shrinks: the batch is one crop_and_resize, equal either way.
    small = [tf.constant(v) for v in ([0.0, 2.0, 4.0], [0.0, 1.0, 3.0], [16.0, 8.0, 12.0], [16.0, 10.0, 14.0])]
    np.testing.assert_allclose(
        augment.crop_and_resize(x, *small, 16).numpy(),
        augment.crop_and_resize(x, *small, 16, antialias=False).numpy(),
        atol=1e-6,
    )
