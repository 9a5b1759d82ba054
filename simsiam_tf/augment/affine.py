"""Small random affine transforms (translation, rotation, scale, shear), drawn per image.

Small images hold their object in a few pixels: a digit moved by two pixels, turned by
ten degrees or slanted is the same digit, and two views that differ so must be matched
by their shape. torchvision's `RandomAffine` semantics: `translate` is a fraction of the
image size per axis, `rotate_deg` and `shear_deg` bound symmetric ranges in degrees,
`scale` is a (min, max) range; the transform is about the image centre.

Coordinates are pixel-area coordinates (pixel `i` covers [i, i + 1), centre i + 0.5),
as PIL's `Image.transform`; the warp itself is one `ImageProjectiveTransformV3` op for
the whole batch, with each image's own matrix.
"""

import dataclasses
import math
from typing import Tuple

import tensorflow as tf

from simsiam_tf.augment.random import split, uniform

FILL_MODES = ("constant", "nearest", "reflect", "wrap")
INTERPOLATIONS = ("bilinear", "nearest")


def forward_matrix(angle_deg, scale, shear_deg, translate_x, translate_y, width, height):
    """The 2x3 map from input to output pixel-area coordinates, as float32 `[B, 2, 3]`.

    `out = c + t + R(angle) Shear_x(shear) scale (in - c)`, with `c` the image centre,
    `t` the translation in pixels and positive angles turning counter-clockwise on the
    screen (y points down).
    """
    angle = tf.cast(angle_deg, tf.float32) * (math.pi / 180.0)
    shear = tf.cast(shear_deg, tf.float32) * (math.pi / 180.0)
    scale = tf.cast(scale, tf.float32)
    cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
    # R = [[cos, sin], [-sin, cos]] (counter-clockwise with y down); Shear_x = [[1, tan], [0, 1]].
    a = scale * cos
    b = scale * (cos * tan + sin)
    d = -scale * sin
    e = scale * (cos - sin * tan)
    cx, cy = width / 2.0, height / 2.0
    tx = cx + tf.cast(translate_x, tf.float32) - (a * cx + b * cy)
    ty = cy + tf.cast(translate_y, tf.float32) - (d * cx + e * cy)
    return tf.stack([tf.stack([a, b, tx], axis=-1), tf.stack([d, e, ty], axis=-1)], axis=-2)


def inverse_matrix(forward):
    """The inverse of 2x3 affine maps `[B, 2, 3]`: from output back to input coordinates."""
    a, b, tx = forward[:, 0, 0], forward[:, 0, 1], forward[:, 0, 2]
    d, e, ty = forward[:, 1, 0], forward[:, 1, 1], forward[:, 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(id_ * tx + ie * ty)
    return tf.stack([tf.stack([ia, ib, itx], axis=-1), tf.stack([id_, ie, ity], axis=-1)], axis=-2)


def warp(images, inverse, interpolation="bilinear", fill_mode="nearest", fill_value=0.0):
    """Each image of `[B, H, W, C]` resampled through its own output -> input map (`inverse`, `[B, 2, 3]`).

    Output pixel centre `u` reads the input at `inverse @ u` (pixel-area coordinates), as
    PIL's `Image.transform(size, Image.AFFINE, inverse)`. float32 out.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}")
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    shape = tf.shape(images)
    inverse = tf.cast(inverse, tf.float32)
    # The op maps output pixel indices to input indices: conjugate by the half-pixel shift.
    a, b, c = inverse[:, 0, 0], inverse[:, 0, 1], inverse[:, 0, 2]
    d, e, f = inverse[:, 1, 0], inverse[:, 1, 1], inverse[:, 1, 2]
    c = c + 0.5 * (a + b) - 0.5
    f = f + 0.5 * (d + e) - 0.5
    zeros = tf.zeros_like(a)
    transforms = tf.stack([a, b, c, d, e, f, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=tf.cast(fill_value, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode=fill_mode.upper(),
    )


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """Per-image random affine transforms of a batch `[B, H, W, C]`, float32 out.

    translate: largest shift as a fraction of the image's width (x) and height (y);
    rotate_deg, shear_deg: angles drawn from U(-v, v); scale: (min, max) of the zoom.
    Borders take the nearest edge pixel (`fill_mode`), so no frame of a constant colour
    tells the views apart.
    """

    translate: float = 0.0
    rotate_deg: float = 0.0
    scale: Tuple[float, float] = (1.0, 1.0)
    shear_deg: float = 0.0
    fill_mode: str = "nearest"
    interpolation: str = "bilinear"

    def __post_init__(self):
        check(self.translate, self.rotate_deg, self.scale, self.shear_deg)
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {self.fill_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))

    @property
    def active(self):
        """Whether the transform can move a pixel (else it is the identity and is skipped)."""
        return bool(self.translate or self.rotate_deg or self.shear_deg or self.scale != (1.0, 1.0))

    def draw(self, seed, batch_size, width, height):
        """The forward matrices `[B, 2, 3]` of one batch; the same seed draws the same ones."""
        seeds = split(seed, 5)

        def draw_uniform(s, low, high):
            return uniform([batch_size], s, low, high)

        width = tf.cast(width, tf.float32)
        height = tf.cast(height, tf.float32)
        return forward_matrix(
            draw_uniform(seeds[0], -self.rotate_deg, self.rotate_deg),
            draw_uniform(seeds[1], self.scale[0], self.scale[1]),
            draw_uniform(seeds[2], -self.shear_deg, self.shear_deg),
            draw_uniform(seeds[3], -self.translate, self.translate) * width,
            draw_uniform(seeds[4], -self.translate, self.translate) * height,
            width,
            height,
        )

    @tf.autograph.experimental.do_not_convert
    def __call__(self, images, seed):
        images = tf.convert_to_tensor(images)
        single = images.shape.rank == 3
        if single:
            images = images[tf.newaxis]
        if not self.active:
            out = tf.cast(images, tf.float32)
        else:
            shape = tf.shape(images)
            forward = self.draw(seed, shape[0], shape[2], shape[1])
            out = warp(images, inverse_matrix(forward), self.interpolation, self.fill_mode)
        return out[0] if single else out


def check(translate, rotate_deg, scale, shear_deg):
    """Raises ValueError naming the first out-of-range affine setting."""
    if not 0.0 <= translate < 0.5:
        raise ValueError(f"affine translate must be a fraction of the image in [0, 0.5), got {translate}")
    if not 0.0 <= rotate_deg <= 180.0:
        raise ValueError(f"affine rotate_deg must be in [0, 180] degrees, got {rotate_deg}")
    if not 0.0 <= shear_deg < 90.0:
        raise ValueError(f"affine shear_deg must be in [0, 90) degrees, got {shear_deg}")
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1]:
        raise ValueError(f"affine scale must be a range (min, max) with 0 < min <= max, got {tuple(scale)}")
