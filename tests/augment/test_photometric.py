"""The colour ops (simsiam_tf.augment.photometric) against NumPy re-derivations of torchvision's.

The hue oracle is torchvision's tensor `adjust_hue` (`_rgb2hsv`, hue shift modulo one
turn, `_hsv2rgb`) in float64; PIL's `adjust_hue` (the reference's, on PIL images) is the
same map on 8-bit HSV, checked with a tolerance for its quantisation.
"""

import colorsys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simsiam_tf import augment


def _rgb2hsv(img):
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    maxc, minc = img.max(-1), img.min(-1)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / np.where(eqc, 1.0, maxc)
    div = np.where(eqc, 1.0, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = np.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _hsv2rgb(h, s, v):
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(np.int64) % 6
    p = np.clip(v * (1.0 - s), 0, 1)
    q = np.clip(v * (1.0 - s * f), 0, 1)
    t = np.clip(v * (1.0 - s * (1.0 - f)), 0, 1)
    table = np.stack(
        [np.stack([v, q, p, p, t, v]), np.stack([t, v, v, q, p, p]), np.stack([p, p, t, v, v, q])]
    )  # [channel, sector, ...]
    return np.stack([np.take_along_axis(table[c], i[None], 0)[0] for c in range(3)], -1)


def numpy_adjust_hue(img, hue_factor):
    h, s, v = _rgb2hsv(img.astype(np.float64))
    return _hsv2rgb(np.mod(h + hue_factor, 1.0), s, v)


def _images(batch=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (batch, size, size, 3))
    images[0, :4] = images[0, :4, :, :1]  # grey pixels: no hue
    images[1, :2, :2] = [1.0, 0.0, 0.0]  # saturated primaries, hue on a sector edge
    images[1, 2:4, :2] = [0.0, 0.0, 1.0]
    images[2, :2] = np.round(images[2, :2])  # ties of max and min
    return images.astype(np.float32)


@pytest.mark.parametrize("deltas", [[0.1, -0.1, 0.05, -0.03], [0.5, -0.5, 0.0, 0.499]])
def test_adjust_hue_matches_torchvision(deltas):
    images = _images()
    ours = augment.adjust_hue(images, tf.constant(deltas)).numpy()
    expected = np.stack([numpy_adjust_hue(img, d) for img, d in zip(images, deltas)])
    np.testing.assert_allclose(ours, expected, atol=2e-6)
    assert ours.min() >= 0.0 and ours.max() <= 1.0


def test_adjust_hue_single_image_and_scalar_delta():
    image = _images()[1]
    np.testing.assert_allclose(augment.adjust_hue(image, 0.2).numpy(), numpy_adjust_hue(image, 0.2), atol=2e-6)


def test_adjust_hue_empty_batch():
    assert augment.adjust_hue(tf.zeros([0, 8, 8, 3]), tf.zeros([0])).shape == (0, 8, 8, 3)


def test_adjust_hue_close_to_pil_on_8_bit_images():
    """PIL's HSV is 8-bit (H, S and V rounded; the shift truncated to int(255 * delta)): a few levels apart."""
    images = np.round(_images(seed=1) * 255).astype(np.uint8)
    for img, delta in zip(images, [0.1, -0.1, 0.07, -0.02]):
        h, s, v = Image.fromarray(img).convert("HSV").split()
        shifted = (np.asarray(h, np.uint8) + np.uint8(int(delta * 255) % 256)).astype(np.uint8)
        pil = np.asarray(Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert("RGB"), np.float64)
        ours = augment.adjust_hue(img[None].astype(np.float32) / 255.0, tf.constant([delta])).numpy()[0] * 255
        diff = np.abs(ours - pil)
        assert diff.mean() < 2.0 and diff.max() <= 16, (diff.mean(), diff.max())


def test_color_jitter_hue_slot_uses_the_same_hue():
    """A jitter whose only non-identity factor is the hue equals adjust_hue, whatever the slot."""
    images = _images()
    factors = tf.constant([[1.0, 1.0, 1.0, d] for d in (0.1, -0.2, 0.3, 0.0)])
    order = tf.constant([[3, 0, 1, 2], [0, 3, 1, 2], [0, 1, 2, 3], [2, 1, 3, 0]])
    ours = augment.color_jitter(images, factors, order).numpy()
    expected = np.stack([numpy_adjust_hue(img, d) for img, d in zip(images, (0.1, -0.2, 0.3, 0.0))])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_saturation_contrast_grayscale_per_image_factors_match_numpy():
    """One colour matrix per image: each image's own factor, blended with its own luma."""
    images = _images(seed=2)
    gray = images.astype(np.float64) @ np.array(augment.GRAY_WEIGHTS)
    factors = np.array([0.6, 1.0, 1.4, 0.0])
    saturated = augment.adjust_saturation(images, tf.constant(factors, tf.float32)).numpy()
    contrasted = augment.adjust_contrast(images, tf.constant(factors, tf.float32)).numpy()
    for i, f in enumerate(factors):
        np.testing.assert_allclose(saturated[i], np.clip(f * images[i] + (1 - f) * gray[i][..., None], 0, 1), atol=1e-6)
        np.testing.assert_allclose(contrasted[i], np.clip(f * images[i] + (1 - f) * gray[i].mean(), 0, 1), atol=1e-6)
    np.testing.assert_allclose(
        augment.grayscale(images, channels=3).numpy(), np.repeat(gray[..., None], 3, -1), atol=1e-6
    )


GRAY = np.array(augment.GRAY_WEIGHTS, np.float32)


def _uint8_images(batch=4, size=20, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    return images if dtype == np.uint8 else images.astype(np.float32) / 255.0


def _np_gray(x):
    return (x * GRAY).sum(-1, keepdims=True)


def test_brightness_contrast_saturation_match_numpy():
    x = _uint8_images(batch=2, size=5, dtype=np.float32)
    f = np.array([0.6, 1.4], np.float32)
    fb = f[:, None, None, None]
    np.testing.assert_allclose(augment.adjust_brightness(x, f).numpy(), np.clip(fb * x, 0, 1), atol=1e-6)
    mean = _np_gray(x).mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(
        augment.adjust_contrast(x, f).numpy(), np.clip(fb * x + (1 - fb) * mean, 0, 1), atol=1e-6
    )
    np.testing.assert_allclose(
        augment.adjust_saturation(x, f).numpy(), np.clip(fb * x + (1 - fb) * _np_gray(x), 0, 1), atol=1e-6
    )


def _np_hue(image, delta):
    out = np.empty_like(image)
    for idx in np.ndindex(image.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*image[idx])
        out[idx] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
    return out


def test_hue_matches_numpy():
    x = _uint8_images(batch=2, size=4, dtype=np.float32)
    deltas = np.array([0.1, -0.35], np.float32)
    out = augment.adjust_hue(x, deltas).numpy()
    for i in range(2):
        np.testing.assert_allclose(out[i], _np_hue(x[i], deltas[i]), atol=1e-4)


def test_color_jitter_applies_ops_in_each_images_order():
    x = _uint8_images(batch=3, size=4, dtype=np.float32)
    factors = np.array([[1.3, 0.7, 1.5, 0.08], [0.8, 1.4, 0.5, -0.1], [1.2, 1.2, 1.2, 0.05]], np.float32)
    order = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
    out = augment.color_jitter(x, factors, order).numpy()
    for i in range(3):
        y = x[i]
        for op in order[i]:
            f = factors[i, op]
            if op == 0:
                y = np.clip(f * y, 0, 1)
            elif op == 1:
                y = np.clip(f * y + (1 - f) * _np_gray(y).mean(), 0, 1)
            elif op == 2:
                y = np.clip(f * y + (1 - f) * _np_gray(y), 0, 1)
            else:
                y = _np_hue(y, f)
        np.testing.assert_allclose(out[i], y, atol=1e-4)
    identity = augment.color_jitter(x, np.tile([[1.0, 1.0, 1.0, 0.0]], (3, 1)), order).numpy()
    np.testing.assert_allclose(identity, x, atol=1e-6)


def test_jitter_factors_ranges_and_orders():
    factors, order = augment.jitter_factors([0, 9], 400, (0.4, 0.3, 0.2, 0.1))
    factors = factors.numpy()
    for j, (lo, hi) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        assert factors[:, j].min() >= lo and factors[:, j].max() <= hi
        assert factors[:, j].max() - factors[:, j].min() > 0.8 * (hi - lo)
    order = order.numpy()
    np.testing.assert_array_equal(np.sort(order, axis=1), np.tile(np.arange(4), (400, 1)))
    assert len({tuple(o) for o in order}) == 24
