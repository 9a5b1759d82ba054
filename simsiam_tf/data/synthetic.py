"""The embedded synthetic image sets, generated from a seed: no download and no file.

- `make_synthetic` ("synthetic"): periodic patterns in a narrow palette, each filling its
  image. The paper's ablations and the measurements of the docs run on it.
- `make_synthetic_scenes` ("synthetic_scenes", the demo's set): the same patterns on an
  object at a random position and scale, in front of clutter.

Both draw their images in NumPy, deterministically in their seed; `load_source` serves
their splits.
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
SYNTHETIC = "synthetic"
SYNTHETIC_SCENES = "synthetic_scenes"
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


def _check_request(num_examples, image_size, num_classes):
    if not 2 <= num_classes <= len(SYNTHETIC_PATTERNS):
        raise ValueError(f"num_classes must be between 2 and {len(SYNTHETIC_PATTERNS)}, got {num_classes}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")


def _pattern_layers(rng, n, size, num_classes, period_range):
    """Pattern-filled images as floats in [0, 1] (no noise yet) and their balanced labels."""
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)

    period = (rng.uniform(*period_range, n) * size).astype(np.float32)
    tilt = rng.uniform(-0.15, 0.15, n)
    cos, sin = np.cos(tilt).astype(np.float32), np.sin(tilt).astype(np.float32)
    phase = rng.random((2, n), dtype=np.float32)
    diagonal_sign = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    target_centre = (rng.uniform(0.2, 0.8, (2, n)) * size).astype(np.float32)
    light_pattern = rng.random(n) < 0.5
    background = _palette_colours(rng, ~light_pattern)
    foreground = _palette_colours(rng, light_pattern)

    x, y = _pixel_centres(size)
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
    return images, labels


def _pixel_centres(size):
    grid = np.arange(size, dtype=np.float32) + 0.5
    return grid[None, None, :], grid[None, :, None]


def _to_uint8_with_noise(rng, images):
    images *= 255.0
    images += rng.standard_normal(images.shape, dtype=np.float32) * (0.03 * 255.0)
    np.clip(np.rint(images, out=images), 0, 255, out=images)
    return images.astype(np.uint8)


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

    Args:
        num_examples: how many images.
        image_size: their side in pixels (at least 8).
        num_classes: how many of the ten patterns (2-10), balanced over the images.
        seed: an int or a `numpy.random.SeedSequence`.

    Returns:
        `(images uint8 [N, S, S, 3], labels int64 [N])`.

    Raises:
        ValueError: `num_classes`, `num_examples` or `image_size` out of range.
    """
    _check_request(num_examples, image_size, num_classes)
    rng = np.random.default_rng(seed)
    images, labels = _pattern_layers(rng, int(num_examples), int(image_size), num_classes, (0.2, 0.32))
    return _to_uint8_with_noise(rng, images), labels


def _smooth_field(rng, n, size, cells):
    """Low-frequency noise in [-1, 1]: a `cells` x `cells` grid of random values, bilinearly upsampled."""
    coarse = rng.uniform(-1.0, 1.0, (n, cells + 1, cells + 1)).astype(np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i
    rows = coarse[:, i, :] * (1 - f)[None, :, None] + coarse[:, i + 1, :] * f[None, :, None]
    return rows[:, :, i] * (1 - f)[None, None, :] + rows[:, :, i + 1] * f[None, None, :]


def _clutter(rng, n, size, strokes):
    """Backgrounds: a mid-tone palette colour, low-frequency shading and `strokes` random line segments."""
    base = 0.5 * (_palette_colours(rng, np.ones(n, bool)) + _palette_colours(rng, np.zeros(n, bool)))
    background = np.clip(base[:, None, None, :] + 0.25 * _smooth_field(rng, n, size, 3)[..., None], 0.0, 1.0)
    x, y = _pixel_centres(size)
    for _ in range(strokes):
        angle = rng.uniform(0.0, np.pi, n).astype(np.float32)[:, None, None]
        start = rng.uniform(0.0, size, (2, n)).astype(np.float32)[:, :, None, None]
        half_length = (rng.uniform(0.15, 0.4, n) * size / 2).astype(np.float32)[:, None, None]
        dx, dy = x - start[0], y - start[1]
        along = dx * np.cos(angle) + dy * np.sin(angle)
        across = dy * np.cos(angle) - dx * np.sin(angle)
        coverage = np.clip(0.5 - _box(along, across, half_length, 0.6), 0.0, 1.0)[..., None]
        colour = _palette_colours(rng, rng.random(n) < 0.5)[:, None, None, :]
        background += coverage * (colour - background)
    return background


def make_synthetic_scenes(num_examples, image_size=32, num_classes=10, seed=0):
    """The demo's set: a patterned object at a random position and scale, in front of clutter.

    The class is the pattern of `make_synthetic` (its period drawn wider here, an eighth
    to a third of the image), carried by one object per image: a disc or a rounded
    square (the shape says nothing of the class) whose side is 65-100% of the image, at
    a uniformly random position inside it. Around it, clutter drawn from the same
    palette: low-frequency shading and six line segments of random place, length and
    angle. Pixel noise over everything.

    Why: in the pattern-filled set, images of a class that happen to share period,
    phase and tilt are close in pixel space, and a kNN on raw pixels finds them; real
    photographs of objects are not like that. Position, scale and clutter take that
    shortcut away from raw pixels and leave SimSiam's views, a crop and its colour
    jitter, what they share: the pattern.

    Takes the arguments of `make_synthetic`, returns `(images uint8 [N, S, S, 3], labels
    int64 [N])` as it does and raises the same `ValueError`s.
    """
    _check_request(num_examples, image_size, num_classes)
    rng = np.random.default_rng(seed)
    n, size = int(num_examples), int(image_size)
    objects, labels = _pattern_layers(rng, n, size, num_classes, (0.12, 0.34))
    side = (rng.uniform(0.65, 1.0, n) * size).astype(np.float32)
    centre = side / 2 + rng.random((2, n), dtype=np.float32) * (size - side)
    round_object = rng.random(n) < 0.5
    x, y = _pixel_centres(size)
    dx, dy = x - centre[0, :, None, None], y - centre[1, :, None, None]
    half = side[:, None, None] / 2
    outline = np.where(
        round_object[:, None, None], np.hypot(dx, dy) - half, _box(dx, dy, 0.9 * half, 0.9 * half) - 0.1 * half
    )
    inside = np.clip(0.5 - outline, 0.0, 1.0)[..., None]
    images = _clutter(rng, n, size, strokes=6)
    images += inside * (objects - images)
    return _to_uint8_with_noise(rng, images), labels
