"""Two SimSiam crops straight from an encoded JPEG: crop windows drawn from the header, partial decodes.

RandomResizedCrop only needs the image size, which `tf.image.extract_jpeg_shape`
reads from the JPEG header without decoding; `tf.image.decode_and_crop_jpeg` then
decodes just the rows and MCU columns a window covers. Both views of an image come
from one file read, either as two partial decodes ("per_view") or one decode of the
smallest box holding both windows, cut twice ("union"); "full" decodes the whole image
once, as a plain decode-then-crop pipeline does.

One decode of the union box costs less than two partial decodes, since the entropy-coded
data has to be parsed up to a window's last row whatever the crop: at 500 x 375 about
0.7 ms of CPU per image less, the same as a full decode (on larger images the union
decodes less than the full image).

Each view is resized to `size` x `size` with antialiased bilinear interpolation (as
PIL's resize, which the reference's RandomResizedCrop calls; `crops.resize_antialiased`),
rounded back to uint8 (or kept as float in [0, 1] for photometric ops that follow on
the host) and optionally mirrored. The photometric stage follows, per image
(`simsiam_tf.augment.per_image.appearance`) or on batches (`TwoViewAugment.appearance`).
"""

import tensorflow as tf

from simsiam_tf.augment.crops import crop_boxes, resize_antialiased
from simsiam_tf.augment.random import bernoulli, seed_tensor, split

DECODE_MODES = ("union", "per_view", "full")


def _view_draws(seed, num_views, flip_prob):
    """The seed of the crop windows and the flips `[num_views]` of one image's views."""
    window_seed, flip_seed = split(seed, 2)
    return window_seed, bernoulli(num_views, flip_seed, flip_prob)


def jpeg_size(contents):
    """(height, width) of an encoded JPEG from its header, int32 scalars; nothing is decoded."""
    shape = tf.image.extract_jpeg_shape(contents)
    return shape[0], shape[1]


def crop_windows(contents, seed, num_views=2, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop windows of an encoded JPEG, int32 `[num_views, 4]` rows (top, left, height, width).

    The sampler is torchvision's (`crops.crop_boxes`): area fraction ~ U(scale),
    log aspect ratio ~ U(log ratio), 10 attempts, else a centre crop with the ratio
    clamped; the image size comes from the header.
    """
    height, width = jpeg_size(contents)
    top, left, crop_h, crop_w = crop_boxes(seed_tensor(seed), num_views, height, width, scale, ratio)
    return tf.cast(tf.stack([top, left, crop_h, crop_w], axis=1), tf.int32)


def union_window(windows):
    """The smallest window (top, left, height, width) `[4]` containing every row of `windows` `[V, 4]`."""
    top = tf.reduce_min(windows[:, 0])
    left = tf.reduce_min(windows[:, 1])
    bottom = tf.reduce_max(windows[:, 0] + windows[:, 2])
    right = tf.reduce_max(windows[:, 1] + windows[:, 3])
    return tf.stack([top, left, bottom - top, right - left])


# Columns decoded beyond each side of a window. libjpeg's fancy chroma upsampling treats
# the edge of a cropped decode as the image edge and replicates the chroma there, which
# moves the outermost column by up to ~15 levels at 4:2:0; with real neighbours decoded
# the window's pixels equal those of the full decode (8 covers 4x horizontal subsampling).
_CHROMA_MARGIN = 8


def decode_window(contents, window):
    """uint8 `[h, w, 3]`: the pixels of `window` (top, left, height, width), decoding only what it covers.

    Equal to decoding the whole image and cutting the window out.
    """
    top, left, height, width = tf.unstack(tf.cast(window, tf.int32))
    image_width = tf.image.extract_jpeg_shape(contents)[1]
    first = tf.maximum(left - _CHROMA_MARGIN, 0)
    last = tf.minimum(left + width + _CHROMA_MARGIN, image_width)
    wide = tf.image.decode_and_crop_jpeg(contents, tf.stack([top, first, height, last - first]), channels=3)
    return wide[:, left - first : left - first + width]


def _resize(crop, size, antialias, dtype, transposed=False):
    if antialias:
        resized = resize_antialiased(crop, size, transpose=transposed)
    else:
        resized = tf.image.resize(crop, [size, size], method="bilinear")
        if transposed:
            resized = tf.transpose(resized, [1, 0, 2])
    if dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    # Bilinear weights are non-negative and sum to one: the result stays in [0, 255].
    return tf.cast(resized * (1.0 / 255.0), dtype)


def _cut(image, window, origin):
    top = window[0] - origin[0]
    left = window[1] - origin[1]
    return image[top : top + window[2], left : left + window[3]]


def views_of_image(
    image, windows, size, flip=None, origin=None, antialias=True, dtype=tf.uint8, stack=True, transposed=False
):
    """uint8 `[V, size, size, 3]`: each window of `windows` `[V, 4]` cut from `image`, resized, mirrored where `flip`.

    `image` holds the pixels from `origin` (top, left; default the image's corner) on,
    so a partial decode serves as well as a full one. `dtype=tf.float32` gives the
    resized pixels in [0, 1] instead, not rounded to 8 bits (for the photometric ops
    that follow on the host: no round trip through uint8). `stack=False` returns the
    views as a tuple (no copy into one tensor, for ops that take them one by one).
    `transposed=True` returns each view with its axes swapped (a mirrored view is
    then reversed along axis 0), for `per_image.appearance(transposed=True)`.
    """
    windows = tf.cast(windows, tf.int32)
    num_views = windows.shape[0]
    if num_views is None:
        raise ValueError("the number of windows must be static")
    if origin is None:
        origin = tf.zeros([2], tf.int32)
    mirror_axis = 0 if transposed else 1
    views = []
    for v in range(num_views):
        view = _resize(_cut(image, windows[v], origin), size, antialias, dtype, transposed)
        if flip is not None:
            view = tf.cond(flip[v], lambda view=view: tf.reverse(view, axis=[mirror_axis]), lambda view=view: view)
        views.append(view)
    return tf.stack(views) if stack else tuple(views)


def decode_views(contents, windows, size, flip=None, mode="union", antialias=True, dtype=tf.uint8):
    """uint8 `[V, size, size, 3]`: each window of `windows` `[V, 4]` decoded, resized and (where `flip`) mirrored.

    mode: "union" (default) decodes the box holding all windows once and cuts them
    from it; "per_view" decodes each window on its own; "full" decodes the whole
    image once.
    The pixels are the same in every mode (a JPEG decodes identically in part).
    antialias=False resizes with plain bilinear sampling instead (cheaper; it aliases
    where a window shrinks). dtype: see `views_of_image`.
    """
    if mode not in DECODE_MODES:
        raise ValueError(f"mode must be one of {DECODE_MODES}, got {mode!r}")
    windows = tf.cast(windows, tf.int32)
    if windows.shape[0] is None:
        raise ValueError("decode_views needs a static number of windows")
    if mode == "per_view":
        views = [
            views_of_image(
                decode_window(contents, windows[v]), windows[v : v + 1], size, None, windows[v, :2], antialias, dtype
            )
            for v in range(windows.shape[0])
        ]
        views = tf.concat(views, axis=0)
        if flip is None:
            return views
        return tf.where(flip[:, None, None, None], tf.reverse(views, axis=[2]), views)
    if mode == "union":
        origin = union_window(windows)
        return views_of_image(decode_window(contents, origin), windows, size, flip, origin[:2], antialias, dtype)
    return views_of_image(tf.io.decode_jpeg(contents, channels=3), windows, size, flip, None, antialias, dtype)


@tf.autograph.experimental.do_not_convert
def random_view_crops(
    contents, seed, size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip_prob=0.5, num_views=2, **decode
):
    """The geometric stage of `num_views` SimSiam views of one encoded JPEG: uint8 `[num_views, size, size, 3]`.

    RandomResizedCrop windows drawn from the header (`crop_windows`), decoded by
    `decode_views` (`decode`: its `mode` and `antialias`), each mirrored left-right
    with probability `flip_prob`. The same seed repeats the views.
    """
    window_seed, flip = _view_draws(seed, num_views, flip_prob)
    windows = crop_windows(contents, window_seed, num_views, scale, ratio)
    return decode_views(contents, windows, size, flip, **decode)


def is_jpeg(contents):
    """True (a bool scalar) when `contents` starts with the JPEG start-of-image marker."""
    return tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff")


def decode_image(contents):
    """uint8 `[H, W, 3]` of any encoded image `tf.io.decode_image` reads (grayscale and RGBA become RGB)."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


@tf.autograph.experimental.do_not_convert
def encoded_view_crops(
    contents,
    seed,
    size,
    scale=(0.2, 1.0),
    ratio=(3 / 4, 4 / 3),
    flip_prob=0.5,
    num_views=2,
    antialias=True,
    dtype=tf.uint8,
    stack=True,
    transposed=False,
):
    """`random_view_crops` of any encoded image: uint8 `[num_views, size, size, 3]`, cut from the original.

    `dtype=tf.float32`: the views in [0, 1], not rounded to 8 bits; `stack=False`: a
    tuple of `num_views` views; `transposed=True`: each view with its axes swapped
    (`views_of_image`).

    JPEGs draw their windows from the header and decode only the box holding them
    ("union"); other formats (PNG, ...) decode whole, once, and the windows come from
    the decoded size. Both take the same draws, so the same picture stored either way
    gets the same windows and flips.
    """
    window_seed, flip = _view_draws(seed, num_views, flip_prob)

    def from_jpeg():
        windows = crop_windows(contents, window_seed, num_views, scale, ratio)
        origin = union_window(windows)
        return views_of_image(
            decode_window(contents, origin), windows, size, flip, origin[:2], antialias, dtype, stack, transposed
        )

    def from_other():
        image = decode_image(contents)
        shape = tf.shape(image)
        top, left, crop_h, crop_w = crop_boxes(window_seed, num_views, shape[0], shape[1], scale, ratio)
        windows = tf.cast(tf.stack([top, left, crop_h, crop_w], axis=1), tf.int32)
        return views_of_image(image, windows, size, flip, None, antialias, dtype, stack, transposed)

    views = tf.cond(is_jpeg(contents), from_jpeg, from_other)
    if stack:
        return tf.ensure_shape(views, [num_views, size, size, 3])
    return tuple(tf.ensure_shape(view, [size, size, 3]) for view in views)
