"""SimSiam's two views (`TwoViewAugment`) and the photometric stage every path runs (`appearance`).

The recipe follows the reference implementation (torchvision transforms):
RandomResizedCrop, ColorJitter applied with probability 0.8 in a random order,
RandomGrayscale, Gaussian blur, horizontal flip. Every image gets its own random draws,
from stateless random ops keyed by an explicit seed tensor of shape `[2]`: the same
seed repeats a view exactly. Views are float32 in [0, 1]; normalisation belongs to the
model.
"""

import dataclasses
from typing import Tuple

import tensorflow as tf

from simsiam_tf.augment import affine as affine_lib
from simsiam_tf.augment.blur import box_blur_support, random_gaussian_blur
from simsiam_tf.augment.crops import random_resized_crop
from simsiam_tf.augment.images import BRANCH, GATHER, to_float
from simsiam_tf.augment.photometric import random_color_jitter, random_grayscale
from simsiam_tf.augment.random import split


@tf.autograph.experimental.do_not_convert
def appearance(images, seed, aug, apply=GATHER, transposed=False):
    """The photometric stage of `aug` (a `TwoViewAugment`) on crops `[B, S, S, 3]` (uint8 or float): float32 in [0, 1].

    Colour jitter, grayscale and blur, each drawn per image from `seed`. `apply` says
    how an op reaches the images that drew it (`images.apply_where`): GATHER (the host
    path on batches), SELECT (static shapes, the device path) or BRANCH (a batch of one
    image, the per-image path; `transposed=True` then takes the crop with its axes
    swapped and returns it the right way round: every op commutes with the transpose).
    The three give the same views of the same crops from the same seed.
    """
    if transposed and apply != BRANCH:
        raise ValueError("transposed=True takes one image at a time (apply=BRANCH)")
    images = to_float(images)
    jitter_seed, gray_seed, blur_seed = split(seed, 3)
    if aug.jitter_prob > 0 and any(aug.jitter_strength):
        images = random_color_jitter(images, jitter_seed, aug.jitter_strength, aug.jitter_prob, apply)
    if aug.grayscale_prob > 0:
        images = random_grayscale(images, gray_seed, aug.grayscale_prob, apply)
    if aug.blur_prob > 0:
        return random_gaussian_blur(
            images, blur_seed, aug.blur_prob, aug.blur_sigma, aug.blur_radius, apply, transposed
        )
    return tf.transpose(images, [0, 2, 1, 3]) if transposed else images


def _check_prob(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _check_range(name, value, upper=None):
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (min, max), got {value}")
    lo, hi = value
    if not 0 < lo <= hi or (upper is not None and hi > upper):
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must satisfy 0 < min <= max{bound}, got {value}")


@dataclasses.dataclass(frozen=True)
class TwoViewAugment:
    """Two independent SimSiam views of each image in a batch.

    `aug(images, seed)` -> `(view1, view2)`, each float32 `[B, image_size, image_size, 3]`
    in [0, 1], from uint8 or [0, 1] float images `[B, H, W, 3]`. `seed` is an int tensor
    of shape [2]; every image gets its own random draws, and the same seed repeats them.
    Defaults are the paper's ImageNet recipe; `TwoViewAugment.cifar()` turns blur off.

    Args:
        image_size: side of the views, in pixels.
        crop_scale: RandomResizedCrop's range of the crop's area, as a fraction of the image.
        crop_ratio: RandomResizedCrop's range of the crop's aspect ratio.
        jitter_strength: colour jitter's brightness, contrast, saturation and hue.
        jitter_prob: probability of the colour jitter.
        grayscale_prob: probability of the grayscale conversion.
        blur_prob: probability of the Gaussian blur (PIL's GaussianBlur).
        blur_sigma: range of the blur's sigma, in pixels.
        flip_prob: probability of a horizontal flip.
        affine_translate: largest shift of a crop, as a fraction of its width and height
            (0: no affine transform unless another affine setting is given).
        affine_rotate_deg: rotation angle drawn from U(-v, v), in degrees.
        affine_scale: (min, max) of the zoom.
        affine_shear_deg: shear angle drawn from U(-v, v), in degrees.

    Raises:
        ValueError: a size, probability or range out of bounds, named in the message.

    Example:
        ```python
        import tensorflow as tf

        augment = TwoViewAugment(image_size=32, blur_prob=0.0)
        images = tf.zeros([8, 40, 40, 3], tf.uint8)
        view1, view2 = augment(images, tf.constant([0, 1]))  # float32 [8, 32, 32, 3] each
        ```
    """

    image_size: int
    crop_scale: Tuple[float, float] = (0.2, 1.0)
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    jitter_strength: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    flip_prob: float = 0.5
    affine_translate: float = 0.0
    affine_rotate_deg: float = 0.0
    affine_scale: Tuple[float, float] = (1.0, 1.0)
    affine_shear_deg: float = 0.0

    def __post_init__(self):
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size}")
        _check_range("crop_scale", self.crop_scale, upper=1.0)
        _check_range("crop_ratio", self.crop_ratio)
        _check_range("blur_sigma", self.blur_sigma)
        if len(self.jitter_strength) != 4 or any(s < 0 for s in self.jitter_strength):
            raise ValueError(
                "jitter_strength must be 4 non-negative numbers (brightness, contrast, saturation, hue), "
                f"got {self.jitter_strength}"
            )
        if self.jitter_strength[3] > 0.5:
            raise ValueError(f"jitter_strength hue must be at most 0.5, got {self.jitter_strength[3]}")
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
            _check_prob(name, getattr(self, name))
        # Normalise sequences to tuples so equal configs compare and hash equal.
        affine_lib.check(self.affine_translate, self.affine_rotate_deg, self.affine_scale, self.affine_shear_deg)
        for name in ("crop_scale", "crop_ratio", "jitter_strength", "blur_sigma", "affine_scale"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "image_size", int(self.image_size))

    @classmethod
    def cifar(cls, image_size=32, **overrides):
        """The paper's CIFAR recipe (App. D): as ImageNet's but without blur."""
        overrides.setdefault("blur_prob", 0.0)
        return cls(image_size=image_size, **overrides)

    @property
    def blur_radius(self):
        """Half width of the blur kernel: PIL's GaussianBlur support for the largest sigma (6 for sigma up to 2.1)."""
        return box_blur_support(self.blur_sigma[1])

    @tf.autograph.experimental.do_not_convert
    def crop(self, images, seed):
        """The geometric stage: random resized crop and horizontal flip, float32 `[B, S, S, 3]`.

        The flip is folded into the crop; it commutes with the later ops (all of them
        are mirror-symmetric), so the views have the reference's distribution. With an
        affine setting, each crop is then moved, turned, zoomed and slanted
        (`simsiam_tf.augment.affine.RandomAffine`).
        """
        affine = self.affine
        if not affine.active:
            return random_resized_crop(images, seed, self.image_size, self.crop_scale, self.crop_ratio, self.flip_prob)
        crop_seed, affine_seed = split(seed, 2)
        crops = random_resized_crop(
            images, crop_seed, self.image_size, self.crop_scale, self.crop_ratio, self.flip_prob
        )
        return tf.clip_by_value(affine(crops, affine_seed), 0.0, 1.0)

    @property
    def affine(self):
        """The geometric stage's random affine transform (inactive by default)."""
        return affine_lib.RandomAffine(
            self.affine_translate, self.affine_rotate_deg, self.affine_scale, self.affine_shear_deg
        )

    @tf.autograph.experimental.do_not_convert
    def appearance(self, images, seed):
        """The photometric stage on float [0, 1] crops: colour jitter, grayscale, blur."""
        return appearance(images, seed, self)

    @tf.autograph.experimental.do_not_convert
    def view(self, images, seed):
        """One augmented view of every image."""
        crop_seed, appearance_seed = split(seed, 2)
        return self.appearance(self.crop(images, crop_seed), appearance_seed)

    @tf.autograph.experimental.do_not_convert
    def __call__(self, images, seed):
        seed1, seed2 = split(seed, 2)
        return self.view(images, seed1), self.view(images, seed2)


# --------------------------------------------------------------------------- evaluation
