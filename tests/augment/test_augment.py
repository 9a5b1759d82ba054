import colorsys

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import augment

GRAY = np.array(augment.GRAY_WEIGHTS, np.float32)


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


def _np_gray(x):
    return (x * GRAY).sum(-1, keepdims=True)


def test_brightness_contrast_saturation_match_numpy():
    x = _images(batch=2, size=5, dtype=np.float32)
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
    x = _images(batch=2, size=4, dtype=np.float32)
    deltas = np.array([0.1, -0.35], np.float32)
    out = augment.adjust_hue(x, deltas).numpy()
    for i in range(2):
        np.testing.assert_allclose(out[i], _np_hue(x[i], deltas[i]), atol=1e-4)


def test_color_jitter_applies_ops_in_each_images_order():
    x = _images(batch=3, size=4, dtype=np.float32)
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
