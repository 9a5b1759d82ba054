"""SimSiam's augmentation as TensorFlow ops: crops, colour, blur, the two views, evaluation preprocessing.

- `random`: stateless seeds and draws; `images`: dtype conversion, single images as
  batches, applying an op to the images that drew it.
- `crops`: RandomResizedCrop windows, crop-and-resize, antialiased resize, flips.
- `affine`: a random affine transform of each crop (translation, rotation, zoom, shear).
- `photometric`: the colour ops (brightness, contrast, saturation, hue, grayscale) and
  the colour jitter's random order, written once for every path.
- `blur`: PIL's GaussianBlur (the recipe's) and an exact Gaussian.
- `views`: `TwoViewAugment` and the photometric stage (`appearance`).
- `eval`: evaluation preprocessing and the linear probe's augmentation.
- `per_image`: the photometric stage on one image at a time (the host input pipeline).
- `device`: the photometric stage inside the train step (`--augment_on=device`).
- `jpeg`: crop windows from a JPEG's header and partial decodes.
"""

from simsiam_tf.augment.blur import (
    BOX_BLUR_PASSES,
    blur_radius,
    box_blur,
    box_blur_image,
    box_blur_kernels,
    box_blur_support,
    gaussian_blur,
    random_gaussian_blur,
)
from simsiam_tf.augment.crops import (
    CROP_ATTEMPTS,
    crop_and_resize,
    crop_boxes,
    random_flip,
    random_resized_crop,
    resize_antialiased,
)
from simsiam_tf.augment.eval import eval_preprocess, eval_resize_size, probe_augment
from simsiam_tf.augment.images import to_float
from simsiam_tf.augment.photometric import (
    BRIGHTNESS,
    CONTRAST,
    GRAY_WEIGHTS,
    HUE,
    SATURATION,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    grayscale,
    jitter_factors,
    random_color_jitter,
    random_grayscale,
)
from simsiam_tf.augment.views import TwoViewAugment

__all__ = [
    "BOX_BLUR_PASSES",
    "BRIGHTNESS",
    "CONTRAST",
    "CROP_ATTEMPTS",
    "GRAY_WEIGHTS",
    "HUE",
    "SATURATION",
    "TwoViewAugment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_radius",
    "box_blur",
    "box_blur_image",
    "box_blur_kernels",
    "box_blur_support",
    "color_jitter",
    "crop_and_resize",
    "crop_boxes",
    "eval_preprocess",
    "eval_resize_size",
    "gaussian_blur",
    "grayscale",
    "jitter_factors",
    "probe_augment",
    "random_color_jitter",
    "random_flip",
    "random_gaussian_blur",
    "random_grayscale",
    "random_resized_crop",
    "resize_antialiased",
    "to_float",
]
