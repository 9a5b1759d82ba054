"""Colour digits on textured backgrounds: grayscale digits made into a cluttered colour set (seeded).

As MNIST-M cuts each digit out of a natural photograph, each digit's stroke here is a
mask over its own procedurally generated background: two random colours mixed by
smooth random blobs and a random grating (orientation, frequency and phase drawn per
image), with per-pixel noise; the stroke gets a third random colour whose luminance
differs from the background's mean by at least `MIN_CONTRAST` (so the digit stays
legible, as in MNIST-M, while colour and texture say nothing about the class).

    python bench/colour_digits.py --npz digits28.npz --out colour_digits28.npz --seed 0
"""

import argparse

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])
MIN_CONTRAST = 0.3


def _blobs(rng, n, size, grid=5):
    """Smooth random fields in [0, 1], `[n, size, size]`: a coarse random grid, bilinearly upsampled."""
    coarse = rng.uniform(0, 1, (n, grid, grid))
    pos = np.linspace(0, grid - 1, size)
    i0 = np.minimum(np.floor(pos).astype(int), grid - 2)
    f = pos - i0
    rows = coarse[:, i0] * (1 - f)[None, :, None] + coarse[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]


def _gratings(rng, n, size):
    """Sinusoidal gratings in [0, 1] with random orientation, 1-6 cycles per image and phase."""
    angle = rng.uniform(0, np.pi, n)[:, None, None]
    cycles = rng.uniform(1, 6, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    y, x = np.mgrid[0:size, 0:size] / size
    return 0.5 + 0.5 * np.sin(2 * np.pi * cycles * (np.cos(angle) * x + np.sin(angle) * y) + phase)


def backgrounds(rng, n, size):
    """`[n, size, size, 3]` float in [0, 1]: two colours mixed by blobs and a grating, plus noise."""
    weight = rng.uniform(0.2, 0.8, n)[:, None, None]
    t = weight * _blobs(rng, n, size) + (1 - weight) * _gratings(rng, n, size)
    c1 = rng.uniform(0, 1, (n, 1, 1, 3))
    c2 = rng.uniform(0, 1, (n, 1, 1, 3))
    out = c1 * (1 - t[..., None]) + c2 * t[..., None]
    return np.clip(out + rng.normal(0, 0.04, out.shape), 0, 1)


def stroke_colours(rng, background_luma):
    """One colour per image whose luminance is at least MIN_CONTRAST from `background_luma` `[n]`."""
    n = len(background_luma)
    colours = rng.uniform(0, 1, (n, 3))
    for _ in range(100):
        bad = np.abs(colours @ LUMA - background_luma) < MIN_CONTRAST
        if not bad.any():
            return colours
        colours[bad] = rng.uniform(0, 1, (int(bad.sum()), 3))
    # What is still too close goes to black or white, whichever is farther.
    bad = np.abs(colours @ LUMA - background_luma) < MIN_CONTRAST
    colours[bad] = np.where(background_luma[bad, None] > 0.5, 0.0, 1.0)
    return colours


def colourise(digits, seed=0):
    """uint8 `[N, H, W]` grayscale digits (white on black) -> uint8 `[N, H, W, 3]` on textured colour backgrounds."""
    if digits.ndim != 3 or digits.shape[1] != digits.shape[2]:
        raise ValueError(f"expected square grayscale images [N, H, W], got {digits.shape}")
    rng = np.random.default_rng(seed)
    n, size = digits.shape[0], digits.shape[1]
    background = backgrounds(rng, n, size)
    stroke = stroke_colours(rng, (background @ LUMA).mean(axis=(1, 2)))
    mask = (digits.astype(np.float64) / 255.0)[..., None]
    out = background * (1 - mask) + stroke[:, None, None, :] * mask
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", required=True, help="grayscale digits: images uint8 [N, H, W], labels")
    parser.add_argument("--out", required=True, help="the colour set's .npz (images uint8 [N, H, W, 3], labels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with np.load(args.npz) as data:
        images, labels = data["images"], data["labels"]
    np.savez_compressed(args.out, images=colourise(images, args.seed), labels=labels)
    print(f"wrote {args.out}: {len(images)} colour images, seed {args.seed}")


if __name__ == "__main__":
    main()
