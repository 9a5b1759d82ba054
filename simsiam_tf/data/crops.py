"""The host half of `--augment_on=device`: two uint8 crops per image and the seeds of their photometric stage.

`make_pretrain_crops_dataset` is `make_pretrain_dataset` stopped after the geometric
stage, one implementation in `simsiam_tf.data.pipeline`: its batches
`((crops1, crops2), seeds)` carry uint8 crops (a quarter of the float32 bytes to ship
to the device) and the stateless seed of each view's photometric stage, which
`simsiam_tf.augment.device.DeviceViews` runs inside the train step.
"""

from simsiam_tf.data.pipeline import make_pretrain_crops_dataset, to_uint8

__all__ = ["make_pretrain_crops_dataset", "to_uint8"]
