"""JPEG crop windows and partial decodes (simsiam_tf.augment.jpeg).

Oracles: the full decode cut with NumPy slicing; torchvision's RandomResizedCrop
sampler re-written in NumPy from its source; PIL's antialiased bilinear resize (the
reference's RandomResizedCrop on PIL images).
"""

import io
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simsiam_tf.augment import jpeg


def _photo(height, width, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([128 + 60 * np.sin(x * f + y * g) for f, g in rng.uniform(0.02, 0.3, (3, 2))], -1)
    return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)


def _jpeg(image, quality=90, subsampling=-1):
    """PIL's encoder (4:2:0 chroma at the default subsampling, as most photos)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo():
    contents = _jpeg(_photo(75, 100))
    return contents, tf.io.decode_jpeg(contents, channels=3).numpy()


WINDOWS = [
    (0, 0, 75, 100),
    (0, 0, 1, 1),
    (7, 13, 33, 41),
    (37, 50, 38, 50),
    (1, 3, 16, 17),
    (8, 16, 32, 48),
    (74, 99, 1, 1),
    (0, 95, 75, 5),
]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("subsampling", [-1, 0, 1])  # 4:2:0 (PIL's default), 4:4:4, 4:2:2
def test_decode_window_equals_decode_then_crop(window, subsampling):
    """Exactly, also at the window's edges, where a plain cropped decode upsamples chroma differently."""
    contents = _jpeg(_photo(75, 100, seed=1), subsampling=subsampling)
    full = tf.io.decode_jpeg(contents, channels=3).numpy()
    top, left, h, w = window
    np.testing.assert_array_equal(jpeg.decode_window(contents, window).numpy(), full[top : top + h, left : left + w])


def test_jpeg_size_reads_the_header(photo):
    contents, _ = photo
    assert [int(v) for v in jpeg.jpeg_size(contents)] == [75, 100]


def test_union_window():
    windows = tf.constant([[10, 20, 30, 40], [5, 50, 10, 30]])
    assert jpeg.union_window(windows).numpy().tolist() == [5, 20, 35, 60]


def test_decode_modes_give_the_same_views(photo):
    contents, _ = photo
    windows = tf.constant([[7, 13, 33, 41], [30, 2, 45, 90]])
    flip = tf.constant([False, True])
    views = [jpeg.decode_views(contents, windows, 24, flip, mode).numpy() for mode in jpeg.DECODE_MODES]
    assert views[0].shape == (2, 24, 24, 3) and views[0].dtype == np.uint8
    for other in views[1:]:
        np.testing.assert_array_equal(views[0], other)


def test_views_match_pil_resize_of_the_crop(photo):
    """The reference's RandomResizedCrop: PIL crop, then PIL's antialiased bilinear resize."""
    contents, full = photo
    windows = [(7, 13, 60, 80), (30, 2, 45, 90), (0, 0, 75, 100)]
    views = jpeg.decode_views(contents, tf.constant(windows), 32, mode="union").numpy().astype(np.float64)
    for view, (top, left, h, w) in zip(views, windows):
        expected = Image.fromarray(full).crop((left, top, left + w, top + h)).resize((32, 32), Image.BILINEAR)
        diff = np.abs(view - np.asarray(expected, np.float64))
        assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())


def test_float_views_are_the_unrounded_uint8_views(photo):
    """dtype=float32 (the host's photometric path): the same resize in [0, 1], not rounded to 8 bits."""
    contents, full = photo
    windows = tf.constant([[7, 13, 60, 80], [30, 2, 45, 90]])
    flip = tf.constant([True, False])
    rounded = jpeg.decode_views(contents, windows, 32, flip).numpy().astype(np.float64)
    exact = jpeg.decode_views(contents, windows, 32, flip, dtype=tf.float32).numpy().astype(np.float64) * 255
    assert exact.min() >= 0 and exact.max() <= 255
    np.testing.assert_allclose(exact, rounded, atol=0.5 + 1e-3)
    assert np.abs(exact - np.round(exact)).max() > 0.1  # not rounded
    expected = Image.fromarray(full[30:75, 2:92]).resize((32, 32), Image.BILINEAR)
    assert np.abs(exact[1] - np.asarray(expected, np.float64)).mean() < 0.5


def test_transposed_views_are_the_views_with_their_axes_swapped(photo):
    contents, _ = photo
    for k in range(4):
        seed = tf.constant([k, 9])
        views = jpeg.encoded_view_crops(contents, seed, 24, dtype=tf.float32, stack=False)
        swapped = jpeg.encoded_view_crops(contents, seed, 24, dtype=tf.float32, stack=False, transposed=True)
        for view, other in zip(views, swapped):
            np.testing.assert_array_equal(np.transpose(other.numpy(), [1, 0, 2]), view.numpy())


def test_flip_mirrors_the_view(photo):
    contents, _ = photo
    seed = tf.constant([3, 4])
    plain = jpeg.random_view_crops(contents, seed, 16, flip_prob=0.0).numpy()
    mirrored = jpeg.random_view_crops(contents, seed, 16, flip_prob=1.0).numpy()
    np.testing.assert_array_equal(mirrored, plain[:, :, ::-1])


def test_random_view_crops_repeat_with_the_seed(photo):
    contents, _ = photo
    a = jpeg.random_view_crops(contents, tf.constant([1, 2]), 16).numpy()
    b = jpeg.random_view_crops(contents, tf.constant([1, 2]), 16).numpy()
    c = jpeg.random_view_crops(contents, tf.constant([1, 3]), 16).numpy()
    assert a.shape == (2, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a[0], a[1])


def test_unknown_mode_is_a_clear_error(photo):
    with pytest.raises(ValueError, match="mode must be one of"):
        jpeg.decode_views(photo[0], tf.constant([[0, 0, 8, 8]]), 8, mode="whole")


# --------------------------------------------------------------------------- torchvision's sampler


def _torchvision_params(rng, height, width, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """`RandomResizedCrop.get_params`, in NumPy."""
    area = height * width
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))

    def cdf(x):
        return np.searchsorted(np.sort(x), grid, side="right") / len(x)

    return np.max(np.abs(cdf(a) - cdf(b)))


def test_crop_windows_follow_torchvision_rules():
    contents = _jpeg(_photo(75, 100))
    n = 4000
    windows = jpeg.crop_windows(contents, tf.constant([5, 6]), num_views=n).numpy().astype(np.float64)
    top, left, h, w = windows.T
    rng = np.random.default_rng(0)
    oracle = np.array([_torchvision_params(rng, 75, 100) for _ in range(n)], np.float64)
    o_top, o_left, o_h, o_w = oracle.T
    # inside the image
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 75).all() and (left + w <= 100).all()
    # the area and the aspect ratio in range, up to the rounding of the sides
    area = h * w / (75 * 100)
    assert area.min() >= 0.2 * (1 - 0.1) and area.max() <= 1.0
    log_ratio = np.log(w / h)
    assert log_ratio.min() >= math.log(3 / 4) - 0.1 and log_ratio.max() <= math.log(4 / 3) + 0.1
    # the same distributions as torchvision's sampler: area, log aspect ratio, position
    for ours, theirs in [
        (area, o_h * o_w / 7500),
        (log_ratio, np.log(o_w / o_h)),
        (top / np.maximum(75 - h, 1), o_top / np.maximum(75 - o_h, 1)),
        (left / np.maximum(100 - w, 1), o_left / np.maximum(100 - o_w, 1)),
    ]:
        assert _ks(ours, theirs) < 0.05


def test_crop_windows_aspect_ratio_is_log_uniform():
    """Where every attempt fits (a square image, small areas), log(w / h) ~ U(log 3/4, log 4/3) up to rounding."""
    contents = tf.io.encode_jpeg(tf.zeros([400, 400, 3], tf.uint8))
    windows = jpeg.crop_windows(contents, tf.constant([7, 8]), num_views=4000, scale=(0.2, 0.5)).numpy()
    log_ratio = np.log(windows[:, 3] / windows[:, 2])
    uniform = np.random.default_rng(0).uniform(math.log(3 / 4), math.log(4 / 3), 4000)
    assert _ks(log_ratio, uniform) < 0.05
    area = windows[:, 2] * windows[:, 3] / 400**2
    assert _ks(area, np.random.default_rng(1).uniform(0.2, 0.5, 4000)) < 0.05


@pytest.mark.parametrize("height, width", [(8, 400), (400, 8)])
def test_crop_windows_fall_back_to_the_centre_crop(height, width):
    """No attempt fits a very elongated image: a centre crop with the ratio clamped to (3/4, 4/3)."""
    contents = tf.io.encode_jpeg(tf.zeros([height, width, 3], tf.uint8))
    windows = jpeg.crop_windows(contents, tf.constant([0, 1]), num_views=3).numpy()
    expected = _torchvision_params(np.random.default_rng(0), height, width)
    assert all(tuple(row) == expected for row in windows.tolist()), (windows, expected)
