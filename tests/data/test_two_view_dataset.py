"""simsiam_tf.data.two_view_dataset: view pairs for model.fit from a Dataset, an array or files; the input rule."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simsiam_tf import augment as augment_lib
from simsiam_tf.data import two_view_dataset

SIZE = 16
# Options that make a view the whole image, untouched: full-image crop at the image's size, no flip, no colour.
IDENTITY = dict(
    crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, flip_prob=0.0
)


def _images(n=10, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _epoch(dataset):
    return [(a.numpy(), b.numpy()) for a, b in dataset]


def test_options_reach_the_augmentation_a_view_without_randomness_is_the_image():
    images = _images(4)
    ((v1, v2),) = _epoch(two_view_dataset(images, 4, SIZE, shuffle=False, **IDENTITY))
    np.testing.assert_allclose(v1, images / 255.0, atol=1e-6)
    np.testing.assert_allclose(v2, images / 255.0, atol=1e-6)


def test_draws_differ_per_image_step_and_epoch_and_repeat_with_the_seed():
    # Ten copies of one image: any difference between views comes from the draws alone.
    images = np.repeat(_images(1), 10, axis=0)
    dataset = two_view_dataset(images, 4, 12, seed=3)
    first, second = _epoch(dataset), _epoch(dataset)
    assert len(first) == len(second) == 2  # floor(10 / 4)
    assert not np.allclose(first[0][0][0], first[0][0][1])  # two images of one batch
    assert not np.allclose(first[0][0][0], first[0][1][0])  # the two views of an image
    assert not np.allclose(first[0][0], first[1][0])  # two steps
    assert not np.allclose(first[0][0], second[0][0])  # two epochs
    again = two_view_dataset(images, 4, 12, seed=3)
    for want, got in zip(first + second, _epoch(again) + _epoch(again)):
        np.testing.assert_array_equal(want[0], got[0])
        np.testing.assert_array_equal(want[1], got[1])
    other = _epoch(two_view_dataset(images, 4, 12, seed=4))
    assert not np.allclose(first[0][0], other[0][0])


def test_epoch_order_is_a_permutation_that_changes_per_epoch():
    # Image i is filled with the value i: a view without randomness tells which image it is.
    n = 12
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None] * 20, (n, 8, 8, 3)).copy()
    dataset = two_view_dataset(images, 3, 8, seed=0, **IDENTITY)

    def order():
        return [int(round(v[0, 0, 0] * 255 / 20)) for x1, _ in _epoch(dataset) for v in x1]

    first, second = order(), order()
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != second
    unshuffled = two_view_dataset(images, 3, 8, shuffle=False, **IDENTITY)
    assert [int(round(v[0, 0, 0] * 255 / 20)) for x1, _ in _epoch(unshuffled) for v in x1] == list(range(n))


@pytest.mark.parametrize("drop_remainder, steps, last", [(True, 3, 4), (False, 4, 2)])
def test_an_epoch_is_floor_or_ceil_of_n_over_batch(drop_remainder, steps, last):
    dataset = two_view_dataset(_images(14), 4, 8, drop_remainder=drop_remainder)
    assert int(dataset.cardinality()) == steps
    batches = _epoch(dataset)
    assert len(batches) == steps and batches[-1][0].shape == (last, 8, 8, 3)


class _Recorder(keras.Model):
    """Records the first view of every batch fit hands to the train step."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def train_step(self, data):
        x1, _ = data
        self.seen.append(x1.numpy())
        return {"steps_seen": float(len(self.seen))}


def _fit(dataset, epochs):
    model = _Recorder()
    model.compile(run_eagerly=True)
    model.fit(dataset, epochs=epochs, verbose=0)
    return model.seen


def test_fit_consumes_it_as_is_each_epoch_new_and_repeats_with_the_seed():
    images = np.repeat(_images(1), 8, axis=0)
    seen = _fit(two_view_dataset(images, 4, 12, seed=5), epochs=2)
    assert len(seen) == 4  # fit ended after 2 epochs of 8 // 4 steps
    assert not np.allclose(seen[0], seen[2])  # epochs 1 and 2 differ
    again = _fit(two_view_dataset(images, 4, 12, seed=5), epochs=2)
    for want, got in zip(seen, again):
        np.testing.assert_array_equal(want, got)
    # fit's first epoch is the dataset's first iteration.
    first_iteration = [x1 for x1, _ in _epoch(two_view_dataset(images, 4, 12, seed=5))]
    np.testing.assert_array_equal(seen[0], first_iteration[0])
    np.testing.assert_array_equal(seen[1], first_iteration[1])


def test_grayscale_array_gives_gray_views():
    gray = _images(6)[..., 0]  # [N, H, W]
    for x1, x2 in _epoch(two_view_dataset(gray, 3, 12, seed=1)):
        assert x1.shape == (3, 12, 12, 3)
        np.testing.assert_allclose(x1[..., 0], x1[..., 2], atol=1e-5)  # every colour op keeps a gray image gray
        np.testing.assert_allclose(x2[..., 1], x2[..., 2], atol=1e-5)


def test_file_paths_read_the_files_pixels(tmp_path):
    images = _images(6)
    sizes = [SIZE, SIZE - 2, SIZE - 4, SIZE, SIZE - 2, SIZE - 4]  # files of varying width
    paths, arrays = [], []
    for i, (image, width) in enumerate(zip(images, sizes)):
        paths.append(str(tmp_path / f"{i}.png"))
        arrays.append(image[:, :width])
        Image.fromarray(arrays[-1]).save(paths[-1])
    from_files = _epoch(two_view_dataset(paths, 3, 8, seed=2, shuffle=False))
    in_memory = tf.data.Dataset.from_generator(
        lambda: iter(arrays), output_signature=tf.TensorSpec([None, None, 3], tf.uint8)
    )
    from_arrays = _epoch(two_view_dataset(in_memory, 3, 8, seed=2))
    assert len(from_files) == 2
    for want, got in zip(from_arrays, from_files):
        np.testing.assert_array_equal(want[0], got[0])
        np.testing.assert_array_equal(want[1], got[1])


def test_image_dataset_from_directory_with_scale_equals_the_uint8_array(tmp_path):
    images = _images(6)
    for i, image in enumerate(images):
        (tmp_path / "cls").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / "cls" / f"{i}.png")
    keras_ds = keras.utils.image_dataset_from_directory(
        str(tmp_path), image_size=(SIZE, SIZE), batch_size=4, shuffle=False, verbose=False
    )
    assert keras_ds.element_spec[0].dtype == tf.float32  # float32 in [0, 255], labels beside
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x / 255\.0.*scale=1/255"):
        _epoch(two_view_dataset(keras_ds, 3, 12, seed=7))
    from_keras = _epoch(two_view_dataset(keras_ds, 3, 12, seed=7, scale=1 / 255))
    from_array = _epoch(two_view_dataset(images, 3, 12, seed=7, shuffle=False))
    assert len(from_keras) == len(from_array) == 2
    for want, got in zip(from_array, from_keras):
        np.testing.assert_allclose(got[0], want[0], atol=1e-5)
        np.testing.assert_allclose(got[1], want[1], atol=1e-5)


def test_the_input_rule_uint8_and_unit_floats_agree_0_255_floats_are_refused():
    images = _images(4)
    seed = tf.constant([1, 2], tf.int64)
    aug = augment_lib.TwoViewAugment(12, blur_prob=0.5)
    from_uint8 = aug(images, seed)
    from_unit = aug(images.astype(np.float32) / 255.0, seed)
    for want, got in zip(from_uint8, from_unit):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x / 255\.0"):
        aug(images.astype(np.float32), seed)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x / 255\.0"):
        aug.appearance(images.astype(np.float32), seed)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"x / 255\.0"):
        augment_lib.eval_preprocess(images.astype(np.float32), 12)
    np.testing.assert_allclose(
        augment_lib.eval_preprocess(images.astype(np.float32) / 255.0, 12).numpy(),
        augment_lib.eval_preprocess(images, 12).numpy(),
        atol=1e-6,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="scale=1/255"):
        _epoch(two_view_dataset(images.astype(np.float32), 2, 12))
    scaled = _epoch(two_view_dataset(images.astype(np.float32), 2, 12, seed=1, scale=1 / 255))
    for want, got in zip(_epoch(two_view_dataset(images, 2, 12, seed=1)), scaled):
        np.testing.assert_allclose(got[0], want[0], atol=1e-5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="batch_size 8 is larger than the 4 images"):
        two_view_dataset(_images(4), 8, 8)
    with pytest.raises(TypeError, match="unknown augmentation option.*jiter_prob"):
        two_view_dataset(_images(4), 2, 8, jiter_prob=0.5)
    with pytest.raises(ValueError, match=r"x\[\.\.\., :3\]"):
        two_view_dataset(np.zeros((4, 8, 8, 4), np.uint8), 2, 8)
    with pytest.raises(ValueError, match="give image_size"):
        two_view_dataset(np.zeros((4, 8, 10, 3), np.uint8), 2)
    with pytest.raises(TypeError, match="tf.data.Dataset, a NumPy array"):
        two_view_dataset({"a": 1}, 2, 8)
    with pytest.raises(TypeError, match="must be uint8"):
        two_view_dataset(np.zeros((4, 8, 8, 3), np.int32), 2, 8)
