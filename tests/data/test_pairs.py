"""Pair, triplet and N-way trial construction from labelled sources."""

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import data
from simsiam_tf.data import pair_images, pairs

SIZE = 16


def _source(images, labels, name="hand-made", class_names=()):
    """A random-access Source of PNG-encoded images, which may differ in size."""
    encoded = [tf.io.encode_png(np.asarray(im, np.uint8)).numpy() for im in images]
    records = (tf.constant(encoded), tf.constant(np.asarray(labels, np.int64)))

    def decode(png, label):
        return tf.io.decode_png(png, channels=3), label

    num_classes = int(np.max(labels)) + 1
    return data.Source(
        dataset=tf.data.Dataset.from_tensor_slices(records).map(decode),
        num_examples=len(encoded),
        num_classes=num_classes,
        image_shape=None,
        class_names=tuple(class_names),
        name=name,
        records=records,
        decode=decode,
    )


def _flat_images(labels, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return [
        np.full((size, size, 3), 20 * (int(y) + 1), np.uint8) + rng.integers(0, 5, (size, size, 3)).astype(np.uint8)
        for y in labels
    ]


@pytest.fixture(scope="module")
def synthetic():
    train = data.load_source("synthetic", split="train", image_size=SIZE, num_examples=200)
    test = data.load_source("synthetic", split="test", image_size=SIZE, num_examples=150)
    return train, test


@pytest.fixture(scope="module")
def pools(synthetic):
    return pairs.make_pools(*synthetic, seed=0)


def _class(pool, indices):
    return pool.table.labels[np.asarray(indices)]


def test_open_set_by_default_train_and_eval_classes_disjoint(synthetic, pools):
    train_classes = set(pools.train.classes)
    eval_classes = set(pools.evaluation.classes)
    assert pools.open_set
    assert not train_classes & eval_classes
    assert train_classes | eval_classes == set(range(10))
    # Validation images: other images of the evaluation classes, never trained on.
    assert set(pools.validation.classes) <= eval_classes
    assert not set(pools.validation.indices) & set(pools.evaluation.indices)
    assert pools.train.table is not pools.evaluation.table
    # The split is a seeded rule: the same seed gives the same classes, another seed others.
    again = pairs.make_pools(*synthetic, seed=0)
    np.testing.assert_array_equal(again.evaluation.classes, pools.evaluation.classes)
    splits = {tuple(pairs.split_classes(range(10), 0.5, seed=s)[1]) for s in range(6)}
    assert len(splits) > 1


def test_closed_set_uses_every_class_everywhere(synthetic):
    closed = pairs.make_pools(*synthetic, closed_set=True, seed=0)
    assert not closed.open_set
    np.testing.assert_array_equal(closed.train.classes, closed.evaluation.classes)
    # One split only: each class's images are divided, no image serves twice.
    single = pairs.make_pools(synthetic[0], None, closed_set=True, eval_fraction=0.4, seed=0)
    assert set(single.train.classes) == set(single.evaluation.classes) == set(range(10))
    parts = [set(single.train.indices), set(single.validation.indices), set(single.evaluation.indices)]
    assert sum(map(len, parts)) == synthetic[0].num_examples
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_single_source_open_set_splits_its_classes(synthetic):
    single = pairs.make_pools(synthetic[0], None, seed=3)
    assert not set(single.train.classes) & set(single.evaluation.classes)
    assert single.train.table is single.evaluation.table


def test_eval_pairs_balanced_correct_and_reproducible(pools):
    pair_set = pairs.make_eval_pairs(pools.evaluation, 101, seed=4)
    assert pair_set.labels.sum() == 50 and len(pair_set.labels) == 101
    same = _class(pools.evaluation, pair_set.first) == _class(pools.evaluation, pair_set.second)
    np.testing.assert_array_equal(same, pair_set.labels == 1)
    assert np.all(pair_set.first[pair_set.labels == 1] != pair_set.second[pair_set.labels == 1])
    assert set(pair_set.first) | set(pair_set.second) <= set(pools.evaluation.indices)
    again = pairs.make_eval_pairs(pools.evaluation, 101, seed=4)
    for a, b in zip((pair_set.first, pair_set.second, pair_set.labels), (again.first, again.second, again.labels)):
        np.testing.assert_array_equal(a, b)
    other = pairs.make_eval_pairs(pools.evaluation, 101, seed=5)
    assert not np.array_equal(other.first, pair_set.first)


def test_training_pairs_balanced_correct_and_reproducible(pools):
    first, second, labels = pairs.pair_batch_indices(pools.train, 64, seed=1, step=7)
    np.testing.assert_array_equal(labels, np.r_[np.ones(32), np.zeros(32)])
    same = _class(pools.train, first) == _class(pools.train, second)
    np.testing.assert_array_equal(same, labels == 1)
    assert np.all(first[:32] != second[:32])
    assert set(first) | set(second) <= set(pools.train.indices)
    again = pairs.pair_batch_indices(pools.train, 64, seed=1, step=7)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)
    assert not np.array_equal(pairs.pair_batch_indices(pools.train, 64, seed=1, step=8)[0], first)
    assert not np.array_equal(pairs.pair_batch_indices(pools.train, 64, seed=2, step=7)[0], first)
    # Every training class turns up in the negatives of a few batches.
    seen = set()
    for step in range(4):
        f, s, y = pairs.pair_batch_indices(pools.train, 64, seed=1, step=step)
        seen |= set(_class(pools.train, f[y == 0])) | set(_class(pools.train, s[y == 0]))
    assert seen == set(pools.train.classes)


def test_pair_stream_images_and_resume(pools):
    stream = pairs.make_pair_dataset(pools.train, 6, SIZE, seed=3, augment="crop_flip")
    batches = list(stream.take(3).as_numpy_iterator())
    (x1, x2), y = batches[0]
    assert x1.shape == x2.shape == (6, SIZE, SIZE, 3) and x1.dtype == np.float32
    assert 0.0 <= x1.min() and x1.max() <= 1.0
    np.testing.assert_array_equal(y, [1, 1, 1, 0, 0, 0])
    assert not np.array_equal(batches[0][0][0], batches[1][0][0])
    # A stream started at step 2 gives the batch of step 2, augmentation included.
    (r1, r2), _ = next(iter(pairs.make_pair_dataset(pools.train, 6, SIZE, seed=3, start_step=2, augment="crop_flip")))
    np.testing.assert_array_equal(r1.numpy(), batches[2][0][0])
    np.testing.assert_array_equal(r2.numpy(), batches[2][0][1])
    # Without augmentation a pair's images are the table's images, resized.
    (p1, _), _ = next(iter(pairs.make_pair_dataset(pools.train, 6, SIZE, seed=3, augment="none")))
    assert not np.array_equal(p1.numpy(), batches[0][0][0])
    first, _, _ = pairs.pair_batch_indices(pools.train, 6, seed=3, step=0)
    np.testing.assert_allclose(p1.numpy(), pair_images.load_images(pools.train.table, first, SIZE), atol=1e-6)


def test_triplets_well_formed(pools):
    a, p, n, ya, yn = pairs.triplet_batch_indices(pools.train, 40, seed=0, step=3)
    np.testing.assert_array_equal(_class(pools.train, a), ya)
    np.testing.assert_array_equal(_class(pools.train, p), ya)
    np.testing.assert_array_equal(_class(pools.train, n), yn)
    assert np.all(a != p) and np.all(ya != yn)
    assert set(a) | set(p) | set(n) <= set(pools.train.indices)
    (xa, xp, xn), (la, ln) = next(iter(pairs.make_class_triplet_dataset(pools.train, 4, SIZE, seed=0)))
    assert xa.shape == xp.shape == xn.shape == (4, SIZE, SIZE, 3)
    assert np.all(la.numpy() != ln.numpy())


def test_n_way_trials(pools):
    queries, candidates = pairs.make_n_way_trials(pools.evaluation, 5, 30, seed=0)
    assert queries.shape == (30,) and candidates.shape == (30, 5)
    classes = _class(pools.evaluation, candidates)
    for t in range(30):
        assert len(set(classes[t])) == 5
    np.testing.assert_array_equal(_class(pools.evaluation, queries), classes[:, 0])
    assert np.all(queries != candidates[:, 0])
    again = pairs.make_n_way_trials(pools.evaluation, 5, 30, seed=0)
    np.testing.assert_array_equal(again[1], candidates)
    with pytest.raises(ValueError, match="20-way trials need 20 distinct classes.*cover 5"):
        pairs.make_n_way_trials(pools.evaluation, 20, 10, seed=0)


def test_fewer_than_two_classes_is_a_clear_error():
    source = _source(_flat_images([0] * 6), [0] * 6, name="one-class")
    with pytest.raises(ValueError, match=r"'one-class' has 1 class\(es\); pair verification needs at least 2"):
        pairs.make_pools(source, None, seed=0)


def test_classes_of_a_single_image_are_a_clear_error():
    labels = list(range(8))
    source = _source(_flat_images(labels), labels, name="singletons")
    with pytest.raises(ValueError, match="single image.*no positive \\(same-class\\) pair"):
        pairs.make_pools(source, None, closed_set=True, seed=0)
    with pytest.raises(ValueError, match="single image"):
        pairs.make_pools(source, None, seed=0)


def test_too_few_classes_for_an_open_set_split():
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    source = _source(_flat_images(labels), labels)
    with pytest.raises(ValueError, match="open-set split of 3 classes.*closed_set"):
        pairs.make_pools(source, None, seed=0)


def test_mixed_size_images_are_resized():
    rng = np.random.default_rng(0)
    shapes = [(20, 30), (12, 12), (40, 16), (16, 16), (9, 25), (33, 33)] * 4
    labels = np.arange(len(shapes)) % 6
    images = [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for h, w in shapes]
    pools = pairs.make_pools(_source(images, labels, name="mixed"), None, val_fraction=0.5, seed=0)
    (x1, x2), _ = next(iter(pairs.make_pair_dataset(pools.train, 4, SIZE, seed=0, augment="none")))
    assert x1.shape == x2.shape == (4, SIZE, SIZE, 3)
    (a, _, _), _ = next(iter(pairs.make_class_triplet_dataset(pools.train, 4, SIZE, seed=0, augment="crop")))
    assert a.shape == (4, SIZE, SIZE, 3)
    loaded = pair_images.load_images(pools.evaluation.table, pools.evaluation.indices, SIZE)
    assert loaded.shape == (pools.evaluation.num_images, SIZE, SIZE, 3)


def test_crop_fraction_keeps_the_middle():
    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 10:30] = 200  # the middle half of each side
    middle = pair_images.prepare_image(image, SIZE, crop_fraction=0.5).numpy()
    np.testing.assert_allclose(middle, 200 / 255, atol=1e-6)
    whole = pair_images.prepare_image(image, SIZE).numpy()
    assert whole.min() == 0.0 and whole.shape == (SIZE, SIZE, 3)


def test_eval_classes_matched_by_name_across_splits():
    train = _source(_flat_images([0, 0, 1, 1, 2, 2]), [0, 0, 1, 1, 2, 2], class_names=("cat", "dog", "emu"))
    # The evaluation split numbers its classes itself: "emu" is 0 there and "cat" 1.
    evaluation = _source(_flat_images([0, 1] * 4), [0, 1] * 4, class_names=("emu", "cat"))
    pools = pairs.make_pools(train, evaluation, closed_set=True, val_fraction=0.5, seed=0)
    assert set(pools.evaluation.classes) == set(pools.validation.classes) == {0, 2}


def test_closed_set_refuses_evaluation_classes_unseen_in_training():
    train = _source(_flat_images([0, 0, 1, 1, 2, 2]), [0, 0, 1, 1, 2, 2], class_names=("cat", "dog", "emu"))
    evaluation = _source(_flat_images([0, 1] * 4), [0, 1] * 4, class_names=("emu", "fox"))
    with pytest.raises(ValueError, match="every evaluation class among the training classes, but fox of"):
        pairs.make_pools(train, evaluation, closed_set=True, val_fraction=0.5, seed=0)


def _mock_as_dataset(splits):
    """A tfds.testing.mock_data `as_dataset_fn` yielding `splits[split]` (lists of feature dicts)."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        examples = splits[str(split)]
        columns = {key: [ex[key] for ex in examples] for key in examples[0]}
        if decoders is not None and "image" in decoders:
            columns["image"] = [tf.io.encode_png(im).numpy() for im in columns["image"]]
        return tf.data.Dataset.from_tensor_slices({k: np.asarray(v) for k, v in columns.items()})

    return as_dataset


def test_tfds_sources_build_pairs():
    tfds = pytest.importorskip("tensorflow_datasets")
    rng = np.random.default_rng(0)

    def character(c):
        image = rng.integers(0, 256, (105, 105, 3)).astype(np.uint8)
        return {"image": image, "label": np.int64(c), "alphabet": np.int64(0), "alphabet_char_id": np.int64(c)}

    # Omniglot: train = background alphabets, test = evaluation alphabets, other characters.
    omniglot = {"train": [character(c) for c in [5, 9, 11] * 3], "test": [character(c) for c in [40, 41, 42] * 4]}
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset(omniglot)):
        train = pair_images.load_labelled_source("omniglot", split="train")
        test = pair_images.load_labelled_source("omniglot", split="test")
    pools = pairs.make_pools(train, test, val_fraction=0.5, seed=0)
    # The splits' classes are disjoint already: they are the open-set split.
    assert set(pools.train.classes) == {5, 9, 11}
    assert set(pools.evaluation.classes) == set(pools.validation.classes) == {40, 41, 42}
    pair_set = pairs.make_eval_pairs(pools.evaluation, 10, seed=0)
    images = pair_images.load_images(pools.evaluation.table, pair_set.first, 32)
    assert images.shape == (10, 32, 32, 3)

    # LFW: the identity is a name (text), and the supervised keys are (label, image).
    names = [b"Ada", b"Bob", b"Cy", b"Di", b"Ed", b"Fay"] * 4
    lfw = {"train": [{"image": rng.integers(0, 256, (250, 250, 3)).astype(np.uint8), "label": n} for n in names]}
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset(lfw)):
        source = pair_images.load_labelled_source("lfw", split="train")
    assert source.num_classes == 6 and source.class_names[:2] == ("Ada", "Bob")
    pools = pairs.make_pools(source, None, val_fraction=0.5, seed=0)
    assert not set(pools.train.classes) & set(pools.evaluation.classes)
    (x1, x2), y = next(iter(pairs.make_pair_dataset(pools.train, 4, SIZE, seed=0)))
    assert x1.shape == (4, SIZE, SIZE, 3) and list(y.numpy()) == [1, 1, 0, 0]
