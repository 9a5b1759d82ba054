"""What the augmentation does to the training images, as one TensorBoard image.

The first thing to check when SimSiam fails on a new domain is what the two views of
its images look like: too strong a crop or colour jitter can leave nothing shared.
"""

import os

import numpy as np
import tensorflow as tf

from simsiam_tf import augment as augment_lib

NUM_IMAGES = 8
GAP = 2  # pixels of white between the tiles
SUMMARY_NAME = "augmentation/image_view1_view2"


def view_grid(images, augment, seed=0):
    """float32 `[k (S + GAP) - GAP, 3 (S + GAP) - GAP, 3]` in [0, 1]: one row per image, resized to S = `augment.image_size`,
    beside its two views `augment(image, seed)` (each image its own seed).

    images: a list of images `[H, W, 3]` (uint8, or float in [0, 1]; sizes may differ).
    """
    size = augment.image_size
    base = tf.constant([seed, 0], tf.int64)
    rows = []
    for i, image in enumerate(images):
        batch = tf.convert_to_tensor(image)[tf.newaxis]
        original = augment_lib.eval_preprocess(batch, size, center_crop=False)[0]
        view1, view2 = augment(batch, tf.random.experimental.stateless_fold_in(base, i))
        rows.append(_row([original.numpy(), view1[0].numpy(), view2[0].numpy()]))
    return _stack(rows, axis=0)


def _stack(tiles, axis):
    gap_shape = list(tiles[0].shape)
    gap_shape[axis] = GAP
    gap = np.ones(gap_shape, np.float32)
    out = [tiles[0]]
    for tile in tiles[1:]:
        out += [gap, tile]
    return np.concatenate(out, axis=axis).astype(np.float32)


def _row(tiles):
    return _stack(tiles, axis=1)


def write_views(log_dir, source, augment, seed=0, num_images=NUM_IMAGES, step=0):
    """Writes `view_grid` of the first `num_images` images of `source` (a `data.Source`) to `log_dir/train`.

    Returns the grid. The images are the first of the source in its fixed order (the same
    images in every run of that data), their views drawn from `seed`.
    """
    images = [image.numpy() for image, _ in source.dataset.take(num_images)]
    if not images:
        return None
    grid = view_grid(images, augment, seed)
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
    with writer.as_default(step=step):
        tf.summary.image(
            SUMMARY_NAME,
            grid[np.newaxis],
            description="each row: a training image (resized), then its two augmented views",
        )
    writer.flush()
    writer.close()
    return grid
