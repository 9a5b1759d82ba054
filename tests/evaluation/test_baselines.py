"""Raw-pixel baselines (features, kNN, probe, pair scores) and the plain-words warnings."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.evaluation import baselines, monitor, pair_metrics, probe
from simsiam_tf.models import backbones

SIZE = 16


def quadrant_set(n_per_class, seed, noise=0.1):
    """4 classes: a bright 8x8 square in quadrant c of a dark 16x16 image, plus noise.

    Separable in pixel space by construction; a random-init CNN ending in global average
    pooling hardly sees where the square is.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(4):
        row, col = divmod(c, 2)
        for _ in range(n_per_class):
            image = rng.uniform(0.0, noise, (SIZE, SIZE, 3))
            image[row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 0.8
            images.append(image)
            labels.append(c)
    return np.asarray(images, np.float32), np.asarray(labels, np.int64)


def as_dataset(images, labels, batch=16):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


def standardise(x, mean, std):
    return (x.reshape(len(x), -1) - mean) / std


def test_pixel_statistics_match_numpy_and_constant_pixels_get_std_one():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(37, 4, 4, 3)).astype(np.float32)
    images[:, 0, 0, 0] = 0.5  # a pixel every image shares
    mean, std = baselines.pixel_statistics(as_dataset(images, np.zeros(37, np.int64), batch=10))
    flat = images.reshape(37, -1).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-5)
    expected_std = flat.std(axis=0)
    expected_std[0] = 1.0
    np.testing.assert_allclose(std, expected_std, rtol=1e-4)


def test_pixel_encoder_standardises_flattened_pixels():
    train, _ = quadrant_set(5, seed=1)
    test, _ = quadrant_set(3, seed=2)
    encoder = baselines.fit_pixel_encoder(tf.data.Dataset.from_tensor_slices(train).batch(7))
    assert backbones.feature_dim(encoder) == SIZE * SIZE * 3
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    np.testing.assert_allclose(encoder(test).numpy(), standardise(test, mean, std), rtol=1e-4, atol=1e-4)
    features, labels = monitor.extract_features(encoder, as_dataset(test, np.arange(len(test))), normalize=False)
    np.testing.assert_allclose(features, standardise(test, mean, std), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(labels, np.arange(len(test)))


def test_pixel_encoder_rejects_statistics_of_the_wrong_width():
    with pytest.raises(ValueError, match="768 entries"):
        baselines.pixel_encoder((SIZE, SIZE, 3), np.zeros(10), np.ones(10))


def numpy_nearest_neighbour(bank, bank_labels, queries):
    """1-NN by cosine similarity, the oracle."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return bank_labels[np.argmax(q @ b.T, axis=1)]


def test_pixel_knn_and_probe_on_a_pixel_separable_set():
    train_x, train_y = quadrant_set(12, seed=3)
    test_x, test_y = quadrant_set(6, seed=4)
    encoder = baselines.fit_pixel_encoder(as_dataset(train_x, train_y))
    bank, bank_y = monitor.extract_features(encoder, as_dataset(train_x, train_y), normalize=False)
    queries, query_y = monitor.extract_features(encoder, as_dataset(test_x, test_y), normalize=False)

    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    oracle = numpy_nearest_neighbour(standardise(train_x, mean, std), train_y, standardise(test_x, mean, std))
    assert np.mean(oracle == test_y) == 1.0
    np.testing.assert_array_equal(monitor.knn_predict(bank, bank_y, queries, 4, k=1), oracle)
    assert monitor.knn_accuracy(bank, bank_y, queries, query_y, 4) == 1.0  # k=200 weighted, the monitor's default

    result = probe.train_linear_on_features(bank, bank_y, queries, query_y, 4, epochs=20, batch_size=16)
    assert result["top1"] == 1.0


def test_random_init_encoder_falls_short_of_pixels_and_the_warning_says_so():
    # Noise this strong drowns what little a random-init CNN sees of the square's position.
    train_x, train_y = quadrant_set(12, seed=5, noise=2.0)
    test_x, test_y = quadrant_set(6, seed=6, noise=2.0)
    train_ds, test_ds = as_dataset(train_x, train_y), as_dataset(test_x, test_y)
    figures = {}
    random_encoder = backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.125)
    for prefix, encoder in (("", random_encoder), ("pixels_", baselines.fit_pixel_encoder(train_ds))):
        bank, bank_y = monitor.extract_features(encoder, train_ds, normalize=False)
        queries, query_y = monitor.extract_features(encoder, test_ds, normalize=False)
        figures[prefix + "knn_top1"] = monitor.knn_accuracy(bank, bank_y, queries, query_y, 4, k=5)
    assert figures["pixels_knn_top1"] == 1.0
    assert figures["knn_top1"] < 1.0
    expected = (
        f"the trained encoder is not better than raw pixels on this data: kNN top-1 {figures['knn_top1']:.3f} "
        "vs 1.000 for raw pixels"
    )
    assert baselines.baseline_warnings(figures) == [expected]


def test_warnings_name_every_figure_that_falls_short_and_only_those():
    metrics = {
        "top1": 0.61,
        "pixels_top1": 0.72,
        "random_init_top1": 0.40,
        "knn_top1": 0.80,
        "pixels_knn_top1": 0.70,
    }
    expected = "the trained encoder is not better than raw pixels on this data: linear probe top-1 0.610 vs 0.720"
    assert baselines.baseline_warnings(metrics) == [expected + " for raw pixels"]
    metrics.update(top1=0.75)
    assert baselines.baseline_warnings(metrics) == []
    # a tie is not better; lower EER is better
    verify = {"roc_auc": 0.9, "pixels_roc_auc": 0.9, "eer": 0.2, "pixels_eer": 0.1, "random_init_eer": 0.3}
    expected = (
        "the trained encoder is not better than raw pixels on this data: ROC-AUC 0.900 vs 0.900 for raw pixels; "
        "EER 0.200 vs 0.100 for raw pixels"
    )
    assert baselines.baseline_warnings(verify) == [expected]
    # random init, and figures missing on one side or None are not compared
    expected = (
        "the trained encoder is not better than the same encoder at random init on this data: linear probe top-1 "
        "0.300 vs 0.500 for the same encoder at random init"
    )
    metrics = {"top1": 0.3, "random_init_top1": 0.5, "pixels_top1": None, "eer": 0.1}
    assert baselines.baseline_warnings(metrics) == [expected]


def test_pixel_verifier_scores_and_pair_metrics():
    train_x, _ = quadrant_set(8, seed=7)
    images, labels = quadrant_set(4, seed=8)
    encoder = baselines.fit_pixel_encoder(tf.data.Dataset.from_tensor_slices(train_x).batch(8))
    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    x = standardise(images, flat.mean(axis=0), flat.std(axis=0))
    first, second = np.triu_indices(len(images), k=1)
    same = (labels[first] == labels[second]).astype(np.int64)

    cosine = baselines.PixelVerifier(encoder, "cosine")
    e = cosine.embed(images).numpy()
    expected = np.sum(x[first] * x[second], axis=1) / (
        np.linalg.norm(x[first], axis=1) * np.linalg.norm(x[second], axis=1)
    )
    np.testing.assert_allclose(cosine.score_embeddings(e[first], e[second]).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert pair_metrics.roc_auc(same, cosine.score_embeddings(e[first], e[second]).numpy()) == 1.0

    l2 = baselines.PixelVerifier(encoder, "l2")
    np.testing.assert_allclose(
        l2.score(images[first], images[second]).numpy(), -np.linalg.norm(x[first] - x[second], axis=1), rtol=1e-4
    )
    assert cosine.embedding_dim == SIZE * SIZE * 3
    with pytest.raises(ValueError, match="distance"):
        baselines.PixelVerifier(encoder, "manhattan")


def test_large_images_skip_the_pixel_baseline_with_a_reason():
    assert baselines.pixel_baseline_note((64, 64, 3)) is None
    note = baselines.pixel_baseline_note((224, 224, 3))
    assert "224x224x3" in note and "150528" in note


def test_no_warning_when_the_encoder_beats_pixels():
    # Noise this strong hides the square from single pixels; averaging each quadrant finds it.
    train_x, train_y = quadrant_set(12, seed=5, noise=10.0)
    test_x, test_y = quadrant_set(6, seed=6, noise=10.0)
    train_ds, test_ds = as_dataset(train_x, train_y), as_dataset(test_x, test_y)
    quadrant_means = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.AveragePooling2D(SIZE // 2), keras.layers.Flatten()]
    )
    figures = {}
    for prefix, encoder in (("", quadrant_means), ("pixels_", baselines.fit_pixel_encoder(train_ds))):
        bank, bank_y = monitor.extract_features(encoder, train_ds, normalize=False)
        queries, query_y = monitor.extract_features(encoder, test_ds, normalize=False)
        figures[prefix + "knn_top1"] = monitor.knn_accuracy(bank, bank_y, queries, query_y, 4, k=5)
    assert figures["knn_top1"] > figures["pixels_knn_top1"]
    assert baselines.baseline_warnings(figures) == []
