"""SimSiam's photometric stage inside the train step, on the accelerator (`--augment_on=device`).

The host cuts the two crops of every image (random resized crop and flip, as
`TwoViewAugment.crop`) and ships them as uint8 with the two stateless seeds the host
path would have used for their photometric stage; `DeviceViews` runs colour jitter,
grayscale and blur on each view inside the compiled step. The draws are
`TwoViewAugment.appearance`'s, from the same seeds, so a batch's views are the host
path's up to the rounding of the crops to uint8. (Compiled with XLA, TensorFlow's
stateless generator gives other numbers for the same seed: the same distribution,
still deterministic in the seed, but not the host path's views.)

The ops run with static shapes: every op runs on the whole batch and a per-image
select keeps the images that drew it (the host path gathers and scatters the drawn
images instead, which on an accelerator means dynamic shapes and host round trips),
and the hue shift is the batched RGB -> HSV -> RGB round trip with one shift per image.
Normalisation stays in the model (`backbones.ImageNormalization`), as on the host path.
"""

import dataclasses

import tensorflow as tf

from simsiam_tf.augment import views
from simsiam_tf.augment.images import SELECT

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


@tf.autograph.experimental.do_not_convert
def appearance(images, seed, aug):
    """`aug.appearance(images, seed)` (aug a `TwoViewAugment`) with static shapes: float32 `[B, S, S, 3]` in [0, 1].

    The draws are those of `TwoViewAugment.appearance`, so both give the same views of
    the same crops; every op runs on the whole batch and a per-image select keeps the
    images that drew it (`SELECT`).
    """
    return views.appearance(images, seed, aug, SELECT)


@dataclasses.dataclass(frozen=True)
class DeviceViews:
    """The train step's view transform: `((crops1, crops2), seeds)` -> `(view1, view2)`.

    crops: uint8 `[B, S, S, 3]` (from `simsiam_tf.data.make_pretrain_crops_dataset`);
    seeds: int64 `[2, 2]`, the photometric seed of each view.
    """

    augment: views.TwoViewAugment

    def __call__(self, data):
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (tuple, list))):
            raise ValueError(
                "augment_on=device expects batches ((crops1, crops2), seeds) from make_pretrain_crops_dataset; "
                f"got {type(data).__name__}"
            )
        (crops1, crops2), seeds = data
        seeds = tf.convert_to_tensor(seeds)
        return appearance(crops1, seeds[0], self.augment), appearance(crops2, seeds[1], self.augment)
