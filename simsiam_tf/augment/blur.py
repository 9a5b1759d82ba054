"""Blur: PIL's GaussianBlur (the reference's, three box passes composed) and an exact Gaussian, per-image sigmas."""

import functools
import math

import numpy as np
import tensorflow as tf

from simsiam_tf.augment.images import BRANCH, GATHER, apply_where, batch_size, batched, pad_edge
from simsiam_tf.augment.random import bernoulli, split, uniform


def blur_radius(image_size):
    """A `gaussian_blur` half width for an image size: the kernel ~10% of the side, odd (23 at 224 px), at least 3.

    torchvision's `GaussianBlur(kernel_size)` convention; the SimSiam recipe blurs with
    PIL's method instead (`box_blur`), whose support follows sigma.
    """
    return max(1, (image_size // 10) // 2)


def _pad_reflect(images, radius):
    """`tf.pad(images, mode="REFLECT")` by `radius` on both spatial axes, by concatenation.

    Several times faster than the MirrorPad kernel, and it takes empty batches.
    """
    tf.debugging.assert_less(
        radius, tf.minimum(tf.shape(images)[1], tf.shape(images)[2]), message="blur radius must be below the image size"
    )
    r = radius
    images = tf.concat([tf.reverse(images[:, 1 : r + 1], [1]), images, tf.reverse(images[:, -r - 1 : -1], [1])], axis=1)
    return tf.concat(
        [tf.reverse(images[:, :, 1 : r + 1], [2]), images, tf.reverse(images[:, :, -r - 1 : -1], [2])], axis=2
    )


@batched
def gaussian_blur(images, sigma, radius):
    """Separable Gaussian blur with a per-image `sigma` `[B]`, truncated at `radius`; reflect padding.

    An exact Gaussian (TF-Addons' `gaussian_filter2d`); the recipe's blur is `box_blur`.

    The batch is folded into the channels so that one depthwise convolution applies a
    different kernel to every image.
    """
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)
    kernel = tf.transpose(tf.repeat(kernel, c, axis=0))  # [2r+1, B*C]
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, b * c])
    folded = _pad_reflect(folded, radius)
    folded = tf.nn.depthwise_conv2d(folded, kernel[:, None, :, None], [1, 1, 1, 1], "VALID")
    folded = tf.nn.depthwise_conv2d(folded, kernel[None, :, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(folded, [h, w, b, c]), [2, 0, 1, 3])


# PIL's GaussianBlur (Pillow's BoxBlur.c), which the reference's GaussianBlur transform
# calls with radius=sigma: three passes of an "extended" box blur per axis, the box of
# fractional radius r = l + a covering 2l + 1 pixels of weight 1 / (2r + 1) and two more
# of weight a / (2r + 1), with r chosen so that the three passes have variance sigma^2.
# The three passes compose into one kernel of half width 3(l + 1) (7 taps for sigma below
# sqrt(2), 13 up to sigma 2.1), applied once per axis.
BOX_BLUR_PASSES = 3


def _box_radius(sigma):
    """BoxBlur.c's `_gaussian_blur_radius(sigma, 3)`: the fractional box radius r, float32 like `sigma`."""
    sigma2 = tf.square(sigma) / BOX_BLUR_PASSES
    whole = tf.floor((tf.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)
    fraction = (2.0 * whole + 1.0) * (whole * (whole + 1.0) - 3.0 * sigma2)
    return whole + fraction / (6.0 * (sigma2 - tf.square(whole + 1.0)))


def box_blur_support(max_sigma):
    """Half width of PIL's GaussianBlur kernel (the three box passes composed) for sigmas up to `max_sigma`."""
    sigma2 = float(max_sigma) ** 2 / BOX_BLUR_PASSES
    return BOX_BLUR_PASSES * (int(math.floor((math.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)) + 1)


def _box_support(sigma):
    """`box_blur_support` of a float32 tensor of sigmas (its largest), an int32 scalar."""
    whole = tf.floor(_box_radius(tf.reduce_max(sigma)))
    return BOX_BLUR_PASSES * (tf.cast(whole, tf.int32) + 1)


def box_blur_kernels(sigma, half_width):
    """PIL's GaussianBlur(radius=sigma) as one 1-D kernel per sigma: `[B, 2 * half_width + 1]`, centred.

    `half_width` below `box_blur_support(max(sigma))` truncates the kernel.
    """
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])
    radius = _box_radius(sigma)
    whole = tf.floor(radius)
    offsets = tf.abs(tf.cast(tf.range(-half_width, half_width + 1), tf.float32))[tf.newaxis]
    box = tf.where(offsets <= whole, 1.0, 0.0) + tf.where(tf.equal(offsets, whole + 1.0), radius - whole, 0.0)
    box = box / (2.0 * radius + 1.0)
    # Compose the passes: convolutions of the symmetric boxes (one channel per sigma).
    channels = tf.transpose(box)[tf.newaxis, tf.newaxis]  # [1, 1, 2h+1, B]
    filters = tf.transpose(box)[tf.newaxis, :, :, tf.newaxis]
    kernel = channels
    for _ in range(BOX_BLUR_PASSES - 1):
        kernel = tf.nn.depthwise_conv2d(kernel, filters, [1, 1, 1, 1], "SAME")
    return tf.transpose(kernel[0, 0])


@batched
def box_blur(images, sigma, half_width=None):
    """PIL's `ImageFilter.GaussianBlur(radius=sigma)`, the reference's blur, with a per-image `sigma` `[B]`.

    Pillow blurs with three passes of an extended box filter per axis, edge pixels
    repeated; the three passes are composed here into one kernel per axis (exact away
    from the border; within 3(l + 1) pixels of it Pillow repeats the edge of every
    pass's output, here of the input's), on float pixels (Pillow rounds every pass to
    uint8). Against Pillow 13 on 224 px images, sigma 0.1-2: mean 0.15-0.65 / 255 on a
    textured image, 0.3-1.0 on white noise (Pillow's roundings); see tests/augment/test_blur.py.

    `half_width`: the kernel's half width, static (e.g. `box_blur_support(max sigma)`,
    as an XLA-compiled step needs); None takes the batch's own, `box_blur_support` of its
    largest sigma (7 taps for sigma < sqrt(2), 13 up to 2.1).
    """
    shape = tf.shape(images)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    sigma = tf.cast(sigma, tf.float32)
    if half_width is None:
        half_width = _box_support(sigma)
    kernel = tf.repeat(box_blur_kernels(sigma, half_width), c, axis=0)  # [B*C, 2h+1]
    kernel = tf.transpose(kernel)
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, b * c])
    folded = pad_edge(folded, half_width)
    folded = tf.nn.depthwise_conv2d(folded, kernel[:, None, :, None], [1, 1, 1, 1], "VALID")
    folded = tf.nn.depthwise_conv2d(folded, kernel[None, :, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(folded, [h, w, b, c]), [2, 0, 1, 3])


def _box_blur_basis(whole):
    """`[4, 6(l + 1) + 1]` kernels whose sum weighted by (1, a, a^2, a^3) / (2r + 1)^3 is the three composed boxes.

    One box of radius r = l + a is (u + a e) / (2r + 1), u the 2l + 1 inner taps and e
    the two outer ones; three of them compose to sum_j C(3, j) a^j u^(3-j) * e^j.
    """
    n = whole + 1
    offsets = np.arange(-n, n + 1)
    inner = (np.abs(offsets) <= whole).astype(np.float64)
    outer = (np.abs(offsets) == n).astype(np.float64)
    terms = []
    for j, binomial in enumerate((1, 3, 3, 1)):
        term = np.ones(1)
        for factor in [inner] * (3 - j) + [outer] * j:
            term = np.convolve(term, factor)
        terms.append(binomial * term)
    return np.stack(terms).astype(np.float32)


def _blur_rows(rows, kernel, half_width):
    """The 1-D `kernel` along axis 0 of `[n, m]`, edge rows repeated; the `m` values of a row as channels."""
    n = tf.shape(rows)[0]
    padded = tf.gather(rows, tf.clip_by_value(tf.range(-half_width, n + half_width), 0, n - 1))
    filters = tf.tile(kernel[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.stack([1, 1, tf.shape(rows)[1], 1]))
    return tf.nn.depthwise_conv2d(padded[tf.newaxis, :, tf.newaxis], filters, [1, 1, 1, 1], "VALID")[0, :, 0]


def box_blur_image(image, sigma, max_sigma=2.0, transpose=False):
    """`box_blur` of one image `[H, W, C]` with a scalar `sigma` <= `max_sigma`, with the kernel this sigma needs.

    The same numbers as `box_blur` (to float rounding), cheaper on one image: the
    kernel's length follows sigma (7 taps below sqrt(2), 13 up to 2.1; one branch per
    length), its taps are a cubic in the box's fraction, and each pass runs along
    axis 0 with the other axis folded into the channels (as `resize_antialiased`).
    `transpose=True` returns the blurred image transposed (the blur commutes with it),
    skipping the last transpose.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    h, w, c = shape[0], shape[1], shape[2]
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [])
    radius = _box_radius(sigma)
    whole = tf.floor(radius)
    fraction = radius - whole
    powers = tf.stack([1.0, fraction, tf.square(fraction), fraction * tf.square(fraction)])
    powers = powers / tf.pow(2.0 * radius + 1.0, 3.0)

    def blur(whole_value):
        half_width = BOX_BLUR_PASSES * (whole_value + 1)
        kernel = tf.linalg.matvec(tf.constant(_box_blur_basis(whole_value)), powers, transpose_a=True)
        rows = _blur_rows(tf.reshape(image, [h, w * c]), kernel, half_width)
        columns = tf.reshape(tf.transpose(tf.reshape(rows, [h, w, c]), [1, 0, 2]), [w, h * c])
        columns = tf.reshape(_blur_rows(columns, kernel, half_width), [w, h, c])
        return columns if transpose else tf.transpose(columns, [1, 0, 2])

    branches = [
        functools.partial(blur, whole_value) for whole_value in range(box_blur_support(max_sigma) // BOX_BLUR_PASSES)
    ]
    out = tf.switch_case(tf.minimum(tf.cast(whole, tf.int32), len(branches) - 1), branches)
    shape = [image.shape[1], image.shape[0], image.shape[2]] if transpose else image.shape
    return tf.ensure_shape(out, shape)


@batched
def random_gaussian_blur(images, seed, prob=0.5, sigma=(0.1, 2.0), radius=None, apply=GATHER, transposed=False):
    """The reference's blur (`box_blur`, PIL's GaussianBlur) with probability `prob`, sigma ~ U(sigma) per image.

    `radius`: the kernel's half width (default `box_blur_support(sigma[1])`). `apply`:
    how the blur reaches the images that drew it (`images.apply_where`). With BRANCH
    (a batch of one) the kernel is the one the image's own sigma needs
    (`box_blur_image`), and `transposed=True` takes the image with its axes swapped and
    returns it the right way round (when the blur runs, its own last transpose does it).
    """
    apply_seed, sigma_seed = split(seed, 2)
    batch = batch_size(images)
    sigmas = uniform([batch], sigma_seed, sigma[0], sigma[1])
    drawn = bernoulli(batch, apply_seed, prob)
    if apply == BRANCH:
        return tf.cond(
            drawn[0],
            lambda: box_blur_image(images[0], sigmas, sigma[1], transpose=transposed)[tf.newaxis],
            lambda: tf.transpose(images, [0, 2, 1, 3]) if transposed else images,
        )
    if transposed:
        raise ValueError("transposed=True takes one image at a time (apply=BRANCH)")
    if radius is None:
        radius = box_blur_support(sigma[1])
    return apply_where(images, drawn, lambda x, s: box_blur(x, s, radius), apply, sigmas)
