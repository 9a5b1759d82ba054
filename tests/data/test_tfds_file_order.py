"""Streamed sources in several files (large TFDS splits) read their files in a new order every epoch,
deterministically in (seed, epoch), so a resumed run sees the batches of an uninterrupted one."""

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.data import pipeline, sources, tfds_source

FILES, PER_FILE, BATCH = 6, 4, 4


def write_files(directory):
    """FILES TFRecord files; record j of file i holds the id 10 * i + j."""
    names = []
    for i in range(FILES):
        name = str(directory / f"train.tfrecord-{i:05d}-of-{FILES:05d}")
        with tf.io.TFRecordWriter(name) as writer:
            for j in range(PER_FILE):
                feature = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[10 * i + j]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        names.append(name)
    return names


def parse(serialized):
    record_id = tf.io.parse_single_example(serialized, {"id": tf.io.FixedLenFeature([], tf.int64)})["id"]
    return tf.fill([2, 2, 3], tf.cast(record_id, tf.uint8)), record_id


def streamed_source(names):
    epoch_records = tfds_source.shuffled_file_records(names, [0] * FILES, [PER_FILE] * FILES, parse, cycle_length=1)
    stored_order = tf.data.TFRecordDataset(names).map(parse)
    return sources.Source(
        dataset=stored_order,
        num_examples=FILES * PER_FILE,
        num_classes=100,
        image_shape=(2, 2, 3),
        class_names=tuple(str(i) for i in range(100)),
        name="files",
        records=stored_order,
        epoch_records=epoch_records,
    )


def ids_of(dataset, steps):
    return [int(v) for _, labels in dataset.take(steps) for v in labels.numpy()]


def file_sequence(ids):
    """The files in the order the ids came from them (cycle_length 1: one file after the other)."""
    files = [i // 10 for i in ids]
    return [f for k, f in enumerate(files) if k == 0 or files[k - 1] != f]


def probe_stream(source, seed, start_step):
    # shuffle_buffer 1: no buffer shuffle, so the element order is the file order.
    return pipeline.make_pretrain_dataset(
        source, BATCH, lambda images, s: (images, images), seed=seed, start_step=start_step, shuffle_buffer=1
    ).map(lambda v1, v2: (v1, tf.cast(v1[:, 0, 0, 0], tf.int64)))


def test_file_order_is_a_permutation_drawn_from_the_seed():
    seed = tf.constant([3, 5], tf.int64)
    order = tfds_source.file_order(FILES, seed).numpy()
    assert sorted(order) == list(range(FILES))
    np.testing.assert_array_equal(order, tfds_source.file_order(FILES, seed).numpy())
    others = {tuple(tfds_source.file_order(FILES, tf.constant([3, k], tf.int64)).numpy()) for k in range(8)}
    assert len(others) > 1


def test_every_epoch_reads_every_record_once_and_the_file_order_changes(tmp_path):
    source = streamed_source(write_files(tmp_path))
    steps_per_epoch = FILES * PER_FILE // BATCH
    ids = ids_of(probe_stream(source, seed=0, start_step=0), 3 * steps_per_epoch)
    epochs = [ids[e * FILES * PER_FILE : (e + 1) * FILES * PER_FILE] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(10 * i + j for i in range(FILES) for j in range(PER_FILE))
    orders = [file_sequence(epoch) for epoch in epochs]
    assert all(sorted(order) == list(range(FILES)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1, orders
    # The same (seed, epoch): the same order; another seed: another.
    assert ids_of(probe_stream(source, seed=0, start_step=0), 3 * steps_per_epoch) == ids
    assert ids_of(probe_stream(source, seed=1, start_step=0), steps_per_epoch) != epochs[0]


@pytest.mark.parametrize("start_step", [6, 8, 13])
def test_resume_at_any_step_sees_the_uninterrupted_batches(tmp_path, start_step):
    source = streamed_source(write_files(tmp_path))
    uninterrupted = ids_of(probe_stream(source, seed=2, start_step=0), 18)
    resumed = ids_of(probe_stream(source, seed=2, start_step=start_step), 18 - start_step)
    assert resumed == uninterrupted[start_step * BATCH :]


def test_a_real_tfds_split_in_several_files_gets_a_per_epoch_file_order(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    class SimsiamShardedMnist(tfds.testing.DummyMnist):
        def _generate_examples(self):
            for i in range(20):  # each image tells which it is
                yield i, {"image": np.full((28, 28, 1), i, np.uint8), "label": i % 10}

    builder = SimsiamShardedMnist(data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    assert len(builder.info.splits["train"].file_instructions) == 4
    monkeypatch.setattr(tfds_source, "IN_MEMORY_MAX_BYTES", 0)  # stream it, as a split too large for memory
    source = sources.load_source("simsiam_sharded_mnist", split="train", data_dir=str(tmp_path))
    assert not source.random_access and source.epoch_records is not None
    stored = [(img.numpy().tobytes(), int(label)) for img, label in source.dataset]
    seed = tf.constant([0, 1], tf.int64)
    first = [(source.decode(*r)[0].numpy().tobytes(), int(r[1])) for r in source.epoch_records(seed)]
    assert sorted(first) == sorted(stored)
    again = [(source.decode(*r)[0].numpy().tobytes(), int(r[1])) for r in source.epoch_records(seed)]
    assert again == first
    orders = {
        tuple(int(source.decode(*r)[0][0, 0, 0]) for r in source.epoch_records(tf.constant([0, k], tf.int64)))
        for k in range(6)
    }
    assert len(orders) > 1
