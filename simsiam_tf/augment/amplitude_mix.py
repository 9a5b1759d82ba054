"""Fourier amplitude mix: a view's texture and colour statistics from another image, its shapes kept.

Xu et al., "A Fourier-based Framework for Domain Generalization" (CVPR 2021): the
amplitude spectrum of an image carries most of its low-level statistics (colours,
textures, the frequency and orientation of a pattern), the phase spectrum its shapes.
Each image's amplitude, per channel, is mixed with that of another image of the batch,
`A = (1 - w) A_self + w A_other` with `w` drawn per image from U(0, strength), and the
image is rebuilt from the mixed amplitude and its own phase. Two views of one image
then carry different parts of other images' textures: a background pattern the views
share no longer matches them reliably, the object's outline still does.
"""

import tensorflow as tf

from simsiam_tf.augment.images import batch_size
from simsiam_tf.augment.random import split, uniform


def check(strength):
    """Raises ValueError unless `strength` (the largest mixing weight) is in [0, 1]."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"amplitude_mix must be the largest mixing weight in [0, 1] (0: off), got {strength}")


@tf.autograph.experimental.do_not_convert
def amplitude_mix(images, partners, weights):
    """`images` `[B, H, W, C]` rebuilt from `(1 - w) |F(images)| + w |F(partners)|` and their own phase.

    `F` is the 2-D discrete Fourier transform of each channel; `weights` `[B]` in [0, 1]
    (0: the image itself, 1: the partner's amplitude with the image's phase). float32
    out, not clipped (a mixed spectrum can overshoot the input's range a little).
    """
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    partners = tf.cast(tf.convert_to_tensor(partners), tf.float32)
    # fft2d transforms the two innermost axes: channels first.
    spectrum = tf.signal.fft2d(tf.complex(tf.transpose(images, [0, 3, 1, 2]), 0.0))
    other = tf.abs(tf.signal.fft2d(tf.complex(tf.transpose(partners, [0, 3, 1, 2]), 0.0)))
    amplitude = tf.abs(spectrum)
    weights = tf.reshape(tf.cast(weights, tf.float32), [-1, 1, 1, 1])
    mixed = (1.0 - weights) * amplitude + weights * other
    # The phase as a unit complex number; where the amplitude is 0 the phase is arbitrary (take 1).
    safe = tf.where(amplitude > 0, amplitude, tf.ones_like(amplitude))
    unit = tf.where(amplitude > 0, spectrum / tf.complex(safe, 0.0), tf.ones_like(spectrum))
    rebuilt = tf.math.real(tf.signal.ifft2d(tf.complex(mixed, 0.0) * unit))
    return tf.transpose(rebuilt, [0, 2, 3, 1])


def draw(seed, batch, strength):
    """(shift, weights): the batch is mixed with itself rolled by `shift` in [1, batch - 1] (0 for one image).

    Rolling the batch pairs every image with another one without a gather; the two
    views draw their own shift, so they take their textures from different images.
    """
    shift_seed, weight_seed = split(seed, 2)
    batch = tf.cast(batch, tf.int32)
    span = tf.maximum(batch - 1, 1)
    shift = tf.random.stateless_uniform([], shift_seed, 0, span, dtype=tf.int32) + 1
    shift = tf.where(batch > 1, shift, 0)
    return shift, uniform([batch], weight_seed, 0.0, strength)


@tf.autograph.experimental.do_not_convert
def random_amplitude_mix(images, seed, strength):
    """Each image of `[B, H, W, C]` (float in [0, 1]) with its amplitude spectrum mixed with another image's.

    The partner is the batch rolled by a random shift (`draw`), the weight per image
    from U(0, `strength`); float32 in [0, 1] out. A batch of one image is returned
    unchanged (it has no other image).
    """
    check(strength)
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    shift, weights = draw(seed, batch_size(images), strength)
    partners = tf.roll(images, shift, axis=0)
    return tf.clip_by_value(amplitude_mix(images, partners, weights), 0.0, 1.0)
