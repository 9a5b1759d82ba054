"""The embedded synthetic image set: periodic patterns in a narrow palette, generated from a seed.

No download and no file: `make_synthetic` draws the images in NumPy, deterministically
in its seed. `load_source("synthetic")` serves its splits.
"""

import numpy as np

SYNTHETIC_PATTERNS = (
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "dots",
    "grid",
    "rings",
    "crosses",
    "zigzag",
    "target",
)
SYNTHETIC_HUES = (0.5, 0.7)
# split -> (seed stream, default number of images)
SYNTHETIC_SPLITS = {"train": (0, 5000), "test": (1, 1000)}


def _box(x, y, half_w, half_h):
    """Signed distance to an axis-aligned box centred at the origin."""
    qx = np.abs(x) - half_w
    qy = np.abs(y) - half_h
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _centred_fraction(t):
    """Position within the current period, in [-0.5, 0.5)."""
    return t - np.floor(t) - 0.5


def _pattern_sdf(index, u, v, diagonal_sign, radius):
    """Signed distance (in periods; negative on the pattern) to synthetic pattern `index`.

    (u, v): lattice coordinates, one unit per period; `radius`: distance to the
    image's own centre, in periods, for the concentric `target`.
    """
    name = SYNTHETIC_PATTERNS[index]
    du, dv = _centred_fraction(u), _centred_fraction(v)
    if name == "horizontal_stripes":
        return np.abs(dv) - 0.2
    if name == "vertical_stripes":
        return np.abs(du) - 0.2
    if name == "diagonal_stripes":
        return np.abs(_centred_fraction((u + diagonal_sign * v) / 2.0)) * np.sqrt(2.0) - 0.2
    if name == "checkerboard":
        return -np.sign(du * dv) * np.minimum(np.abs(du), np.abs(dv))
    if name == "dots":
        return np.hypot(du, dv) - 0.28
    if name == "grid":
        return np.minimum(0.5 - np.abs(du), 0.5 - np.abs(dv)) - 0.1
    if name == "rings":
        return np.abs(np.hypot(du, dv) - 0.3) - 0.09
    if name == "crosses":
        return np.minimum(_box(du, dv, 0.38, 0.1), _box(du, dv, 0.1, 0.38))
    if name == "zigzag":
        triangle_wave = np.abs(du) * 2.0 - 0.5
        return np.abs(_centred_fraction(v + 0.5 * triangle_wave)) * 0.8 - 0.15
    # target: concentric rings around a point of the image
    return np.abs(_centred_fraction(radius)) - 0.2


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, all in [0, 1]; returns [..., 3]."""
    k = (np.array([5.0, 3.0, 1.0], np.float32) + h[..., None] * 6.0) % 6.0
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _palette_colours(rng, light):
    """One colour per image from the set's narrow palette; light (HSV value 0.65-0.85) or dark (0.15-0.35)."""
    n = len(light)
    value = np.where(light, rng.uniform(0.65, 0.85, n), rng.uniform(0.15, 0.35, n)).astype(np.float32)
    hue = rng.uniform(*SYNTHETIC_HUES, n).astype(np.float32)
    return _hsv_to_rgb(hue, rng.uniform(0.2, 0.5, n).astype(np.float32), value)


def make_synthetic(num_examples, image_size=32, num_classes=10, seed=0):
    """A deterministic labelled image set whose class is a periodic pattern and nothing else.

    Each image is filled with one of `num_classes` patterns (horizontal, vertical or
    diagonal stripes, checkerboard, dots, grid, rings, crosses, zigzag, concentric
    target); classes are balanced. Every image draws its own period (a fifth to a
    third of the image), phase, slight tilt, diagonal direction, target centre and
    polarity (light pattern on dark or the reverse), with pixel noise.

    Colours come from a narrow blue-grey palette whose spread (hue 0.5-0.7, value
    +-0.1) lies within what SimSiam's colour jitter (hue +-0.1, brightness x0.6-1.4)
    does to a view anyway, so colour tells neither the class nor the image: what two
    augmented views of an image share, and other images do not, is the pattern. A
    random conv net sees the patterns too, but mixed with period, phase and polarity,
    which SimSiam learns to ignore (a crop rescales the period and shifts the phase).

    Returns `(images uint8 [N, S, S, 3], labels int64 [N])`.
    """
    if not 2 <= num_classes <= len(SYNTHETIC_PATTERNS):
        raise ValueError(f"num_classes must be between 2 and {len(SYNTHETIC_PATTERNS)}, got {num_classes}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    n, size = int(num_examples), int(image_size)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)

    period = (rng.uniform(0.2, 0.32, n) * size).astype(np.float32)
    tilt = rng.uniform(-0.15, 0.15, n)
    cos, sin = np.cos(tilt).astype(np.float32), np.sin(tilt).astype(np.float32)
    phase = rng.random((2, n), dtype=np.float32)
    diagonal_sign = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    target_centre = (rng.uniform(0.2, 0.8, (2, n)) * size).astype(np.float32)
    light_pattern = rng.random(n) < 0.5
    background = _palette_colours(rng, ~light_pattern)
    foreground = _palette_colours(rng, light_pattern)

    grid = np.arange(size, dtype=np.float32) + 0.5
    x, y = grid[None, None, :], grid[None, :, None]
    alpha = np.empty((n, size, size), np.float32)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        p = period[idx, None, None]
        co, si = cos[idx, None, None], sin[idx, None, None]
        u = (co * (x - size / 2) + si * (y - size / 2)) / p + phase[0, idx, None, None]
        v = (co * (y - size / 2) - si * (x - size / 2)) / p + phase[1, idx, None, None]
        radius = np.hypot(x - target_centre[0, idx, None, None], y - target_centre[1, idx, None, None]) / p
        # Signed distance in pixels -> antialiased coverage.
        alpha[idx] = np.clip(0.5 - _pattern_sdf(c, u, v, diagonal_sign[idx, None, None], radius) * p, 0.0, 1.0)
    images = background[:, None, None, :] + alpha[..., None] * (foreground - background)[:, None, None, :]
    images *= 255.0
    images += rng.standard_normal(images.shape, dtype=np.float32) * (0.03 * 255.0)
    np.clip(np.rint(images, out=images), 0, 255, out=images)
    return images.astype(np.uint8), labels
