"""SimSiam's photometric stage inside the train step, on the accelerator (`--augment_on=device`).

The host cuts the two crops of every image (random resized crop and flip, as
`TwoViewAugment.crop`) and ships them as uint8 with the two stateless seeds the host
path would have used for their photometric stage; `DeviceViews` runs colour jitter,
grayscale and blur on each view inside the compiled step. The draws are
`TwoViewAugment.appearance`'s, from the same seeds, so a batch's views are the host
path's up to the rounding of the crops to uint8. (Compiled with XLA, TensorFlow's
stateless generator gives other numbers for the same seed: the same distribution,
still deterministic in the seed, but not the host path's views.)

The ops are written with static shapes: every op runs on the whole batch and a per-image
select keeps the images that drew it (the host path gathers and scatters the drawn
images instead, which on an accelerator means dynamic shapes and host round trips),
and the hue shift is the batched RGB -> HSV -> RGB round trip with one shift per image.
Normalisation stays in the model (`backbones.ImageNormalization`), as on the host path.
"""

import dataclasses

import tensorflow as tf

from simsiam_tf import augment as augment_lib

HOST, DEVICE, AUTO = "host", "device", "auto"


def accelerator_present():
    """True when TensorFlow sees a GPU or a TPU."""
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def resolve_augment_on(choice, strategy_name="auto"):
    """'host' or 'device' for an `augment_on` choice; auto picks device when an accelerator is present."""
    if choice in (HOST, DEVICE):
        return choice
    if choice != AUTO:
        raise ValueError(f"augment_on must be one of host, device, auto; got {choice!r}")
    return DEVICE if strategy_name == "tpu" or accelerator_present() else HOST


def _split(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _bernoulli(batch, seed, prob):
    return tf.random.stateless_uniform([batch], seed=seed) < prob


def _select(mask, changed, images):
    return tf.where(mask[:, None, None, None], changed, images)


def adjust_hue(images, delta):
    """torchvision's adjust_hue with one shift per image of the batch (`delta` `[B]`), clipped to [0, 1]."""
    hsv = tf.image.rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., 0] + delta[:, None, None], 1.0)
    rgb = tf.image.hsv_to_rgb(tf.concat([hue[..., None], hsv[..., 1:]], axis=-1))
    return tf.clip_by_value(rgb, 0.0, 1.0)


def color_jitter(images, factors, order):
    """`augment.color_jitter` with static shapes: the hue shift runs on the batch, kept where drawn."""
    shape = tf.shape(images)
    weights = tf.constant(augment_lib.GRAY_WEIGHTS)
    identity = tf.eye(3)[tf.newaxis]
    gray_map = (weights[:, tf.newaxis] * tf.ones([1, 3]))[tf.newaxis]
    pixels = tf.reshape(images, [shape[0], -1, 3])
    hue_delta = factors[:, augment_lib.HUE]
    for slot in range(4):
        op = order[:, slot]
        factor = tf.where(
            op == augment_lib.HUE, 1.0, tf.gather(factors, tf.minimum(op, augment_lib.SATURATION), batch_dims=1)
        )
        rest = 1.0 - factor
        gray_weight = tf.where(op == augment_lib.SATURATION, rest, 0.0)
        mean_gray = tf.linalg.matvec(tf.reduce_mean(pixels, axis=1), weights)
        offset = tf.where(op == augment_lib.CONTRAST, rest, 0.0) * mean_gray
        matrix = factor[:, None, None] * identity + gray_weight[:, None, None] * gray_map
        pixels = tf.clip_by_value(tf.matmul(pixels, matrix) + offset[:, None, None], 0.0, 1.0)
        shift = (op == augment_lib.HUE) & (hue_delta != 0.0)
        shifted = adjust_hue(pixels[:, tf.newaxis], tf.where(shift, hue_delta, 0.0))[:, 0]
        pixels = tf.where(shift[:, None, None], shifted, pixels)
    return tf.reshape(pixels, shape)


@tf.autograph.experimental.do_not_convert
def appearance(images, seed, aug):
    """`aug.appearance(images, seed)` (aug a `TwoViewAugment`) with static shapes: float32 `[B, S, S, 3]` in [0, 1].

    The seed splits and draws are those of `TwoViewAugment.appearance` and the
    `augment.random_*` ops it calls, so both give the same views of the same crops.
    """
    images = augment_lib.to_float(images)
    seed = tf.convert_to_tensor(seed)
    batch = tf.shape(images)[0]
    jitter_seed, gray_seed, blur_seed = _split(seed, 3)
    if aug.jitter_prob > 0 and any(aug.jitter_strength):
        apply_seed, factor_seed = _split(jitter_seed, 2)
        factors, order = augment_lib.jitter_factors(factor_seed, batch, aug.jitter_strength)
        apply = _bernoulli(batch, apply_seed, aug.jitter_prob)
        factors = tf.where(apply[:, None], factors, tf.constant([1.0, 1.0, 1.0, 0.0]))
        images = color_jitter(images, factors, order)
    if aug.grayscale_prob > 0:
        gray = _bernoulli(batch, gray_seed, aug.grayscale_prob)
        images = _select(gray, augment_lib.grayscale(images, channels=3), images)
    if aug.blur_prob > 0:
        apply_seed, sigma_seed = _split(blur_seed, 2)
        sigmas = tf.random.stateless_uniform([batch], sigma_seed, aug.blur_sigma[0], aug.blur_sigma[1])
        blur = _bernoulli(batch, apply_seed, aug.blur_prob)
        images = _select(blur, augment_lib.box_blur(images, sigmas, aug.blur_radius), images)
    return images


@dataclasses.dataclass(frozen=True)
class DeviceViews:
    """The train step's view transform: `((crops1, crops2), seeds)` -> `(view1, view2)`.

    crops: uint8 `[B, S, S, 3]` (from `simsiam_tf.data.make_pretrain_crops_dataset`);
    seeds: int64 `[2, 2]`, the photometric seed of each view.
    """

    augment: augment_lib.TwoViewAugment

    def __call__(self, data):
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (tuple, list))):
            raise ValueError(
                "augment_on=device expects batches ((crops1, crops2), seeds) from make_pretrain_crops_dataset; "
                f"got {type(data).__name__}"
            )
        (crops1, crops2), seeds = data
        seeds = tf.convert_to_tensor(seeds)
        return appearance(crops1, seeds[0], self.augment), appearance(crops2, seeds[1], self.augment)
