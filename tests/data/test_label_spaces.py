"""One label space per folder dataset: class folders map by name across splits; evaluation refuses mismatches."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import config, data
from simsiam_tf.data import pairs, sources
from simsiam_tf.errors import RunError
from simsiam_tf.runs import linear, pretrain

COLOURS = {"a": (230, 20, 20), "b": (20, 230, 20), "c": (20, 20, 230), "d": (230, 230, 20), "e": (20, 230, 230)}


def write_split(root, counts, seed):
    """Solid-colour 16x16 images with a little noise: class `name` is colour COLOURS[name]."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = np.clip(np.asarray(COLOURS[name]) + rng.integers(-15, 16, (16, 16, 3)), 0, 255).astype(np.uint8)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())


@pytest.fixture
def folders(tmp_path):
    write_split(tmp_path / "train", {"a": 6, "b": 6, "c": 6}, seed=0)
    write_split(tmp_path / "test", {"a": 4, "b": 0, "c": 4}, seed=1)
    return tmp_path


def pretrain_config(data_dir):
    return config.replace(
        config.PretrainConfig(),
        **{"data.dataset": "folder", "data.data_dir": str(data_dir), "data.image_size": 16, "batch_size": 4},
    )


def mean_colour_encoder():
    inputs = keras.Input((16, 16, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))


def test_classes_map_by_name_and_an_empty_folder_is_a_warning(folders, caplog):
    cfg = pretrain_config(folders)
    with caplog.at_level(logging.WARNING):
        train = pretrain.load_train_source(cfg)
        test = pretrain.load_eval_source(cfg)
    assert train.class_names == test.class_names == ("a", "b", "c")
    labels = np.asarray(test.records[-1])
    assert sorted(set(labels.tolist())) == [0, 2]  # c keeps label 2 although test/b is empty
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(folders / "test" / "b") in w and "no images" in w for w in warnings), warnings


def test_knn_and_probe_are_perfect_on_separable_classes_with_an_empty_test_folder(folders):
    cfg = pretrain_config(folders)
    train, test = pretrain.load_train_source(cfg), pretrain.load_eval_source(cfg)
    eval_sets = pretrain.eval_datasets(cfg, train, test)
    metrics = pretrain.evaluate_encoder(
        mean_colour_encoder(),
        *eval_sets,
        num_classes=train.num_classes,
        knn_k=3,
        knn_temperature=0.1,
        probe_epochs=100,
        seed=0,
    )
    assert metrics["knn_top1"] == 1.0
    assert metrics["probe_top1"] == 1.0


def test_a_test_class_unknown_to_training_is_an_error_naming_it(folders):
    write_split(folders / "test", {"d": 3}, seed=2)
    cfg = pretrain_config(folders)
    train, test = pretrain.load_train_source(cfg), pretrain.load_eval_source(cfg)
    with pytest.raises(RunError, match=r"class\(es\) d of split 'test' have no images in split 'train'.*add"):
        pretrain.eval_datasets(cfg, train, test)
    linear_cfg = config.replace(
        config.LinearConfig(init_from=str(folders / "run")),
        **{"data.dataset": "folder", "data.data_dir": str(folders), "data.image_size": 16},
    )
    with pytest.raises(RunError, match="the linear probe: class\\(es\\) d of split 'test'"):
        linear._load_sources(linear_cfg)


def test_an_empty_training_folder_makes_its_test_class_unknown(folders):
    (folders / "train" / "e").mkdir()
    write_split(folders / "test", {"e": 0}, seed=3)
    cfg = pretrain_config(folders)
    train, test = pretrain.load_train_source(cfg), pretrain.load_eval_source(cfg)
    assert train.class_names == ("a", "b", "c", "e")
    pretrain.eval_datasets(cfg, train, test)  # both empty: nothing to predict, no error
    write_split(folders / "test", {"e": 2}, seed=4)
    test = pretrain.load_eval_source(cfg)
    with pytest.raises(RunError, match=r"class\(es\) e of split 'test'"):
        pretrain.eval_datasets(cfg, train, test)


def test_evaluation_compares_class_names_not_counts(folders):
    train = data.load_source("folder", split="train", data_dir=str(folders))
    renamed = sources.records_source(
        train.records, train.decode, train.num_classes, train.image_shape, ("a", "b", "z"), "folder"
    )
    with pytest.raises(ValueError, match="classes only in 'test': z; only in 'train': c"):
        data.check_label_spaces(train, renamed)
    data.check_label_spaces(train, train)


def test_tfds_keeps_its_own_class_names(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        source = data.load_source("mnist", split="test", label_splits=("train",))
    assert source.class_names == tuple(str(i) for i in range(10))


def test_closed_set_verification_refuses_classes_unseen_in_training(folders):
    write_split(folders / "test", {"d": 3}, seed=2)
    train = data.load_source("folder", split="train", data_dir=str(folders))
    test = data.load_source("folder", split="test", data_dir=str(folders))
    with pytest.raises(ValueError, match="closed-set evaluation needs every evaluation class.*d of 'folder'"):
        pairs.make_pools(train, test, closed_set=True)
