"""Augmentation on the device: host uint8 crops + the photometric stage in the train step, against the host path.

Oracles: the host path (`make_pretrain_dataset` with `TwoViewAugment`, tested against
NumPy elsewhere), NumPy's re-derivation of torchvision's hue shift, the recipe's
probabilities (binomial tolerances) and a run straight through against a resumed one.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from test_photometric import numpy_adjust_hue

from simsiam_tf import augment, builders, config, data
from simsiam_tf.augment import device as device_augment
from simsiam_tf.augment import photometric
from simsiam_tf.data import source as source_lib
from simsiam_tf.data import sources
from simsiam_tf.runs import pretrain

SIZE = 16
RECIPE = augment.TwoViewAugment(image_size=SIZE, blur_prob=0.5)


def synthetic(n=64):
    return data.load_source("synthetic", split="train", image_size=SIZE, seed=0, num_examples=n)


def device_batches(source, aug, steps, seed=0, start_step=0, batch=16):
    views = device_augment.DeviceViews(aug)
    out = []
    for element in data.make_pretrain_crops_dataset(source, batch, aug, seed=seed, start_step=start_step).take(steps):
        out.append(tuple(v.numpy() for v in views(element)))
    return out


def host_batches(source, aug, steps, seed=0, start_step=0, batch=16):
    dataset = data.make_pretrain_dataset(source, batch, aug, seed=seed, start_step=start_step)
    return [tuple(v.numpy() for v in views) for views in dataset.take(steps)]


def test_batched_hue_shift_matches_numpy_per_image():
    images = np.random.default_rng(0).uniform(0, 1, (4, 6, 6, 3)).astype(np.float32)
    delta = np.array([0.1, -0.1, 0.0, 0.45], np.float32)
    out = photometric.adjust_hue(tf.constant(images), tf.constant(delta), static_shapes=True).numpy()
    for i in range(4):
        np.testing.assert_allclose(out[i], np.clip(numpy_adjust_hue(images[i], delta[i]), 0, 1), atol=2e-5)


def test_static_shape_stage_equals_the_host_stage_on_the_same_crops():
    images = tf.random.stateless_uniform([32, SIZE, SIZE, 3], seed=[1, 2])
    for seed in ([0, 0], [5, 9], [123, 4]):
        np.testing.assert_allclose(
            device_augment.appearance(images, tf.constant(seed, tf.int64), RECIPE).numpy(),
            RECIPE.appearance(images, tf.constant(seed, tf.int64)).numpy(),
            atol=2e-5,
        )


def test_device_views_are_the_host_pipelines_views_up_to_uint8_crops():
    source = synthetic()
    host = host_batches(source, RECIPE, 3)
    device = device_batches(source, RECIPE, 3)
    for (h1, h2), (d1, d2) in zip(host, device):
        for h, d in ((h1, d1), (h2, d2)):
            assert d.shape == h.shape and d.dtype == np.float32
            # Rounding a crop to uint8 moves a pixel by at most half a level, which
            # jitter factors up to 1.4 and the hue rotation can enlarge a little.
            assert np.abs(h - d).max() < 6 / 255
            assert np.abs(h - d).mean() < 1 / 255


def test_crops_are_uint8_and_deterministic_in_seed_and_step():
    source = synthetic()
    full = list(data.make_pretrain_crops_dataset(source, 16, RECIPE, seed=3).take(6).as_numpy_iterator())
    resumed = list(
        data.make_pretrain_crops_dataset(source, 16, RECIPE, seed=3, start_step=4).take(2).as_numpy_iterator()
    )
    (c1, c2), seeds = full[0]
    assert c1.dtype == np.uint8 and c1.shape == (16, SIZE, SIZE, 3) and seeds.shape == (2, 2)
    for a, b in zip(full[4:], resumed):
        np.testing.assert_array_equal(a[0][0], b[0][0])
        np.testing.assert_array_equal(a[0][1], b[0][1])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(full[0][1], full[1][1])


def test_variable_size_images_take_the_per_image_crop_path_too():
    rng = np.random.default_rng(0)
    encoded = [
        tf.io.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).numpy()
        for h, w in [(20, 30), (24, 18), (33, 21), (19, 19)] * 4
    ]
    labels = np.full(len(encoded), -1, np.int64)
    varied = sources.records_source((encoded, labels), source_lib.decode_encoded, 0, None, (), "varied")
    host = host_batches(varied, RECIPE, 2, batch=8)
    device = device_batches(varied, RECIPE, 2, batch=8)
    for (h1, h2), (d1, d2) in zip(host, device):
        assert np.abs(h1 - d1).max() < 6 / 255 and np.abs(h2 - d2).max() < 6 / 255


def _views(batches):
    return np.concatenate([np.concatenate(pair) for pair in batches])


def _changed(views, reference):
    return np.abs(views - reference).reshape(len(views), -1).max(axis=1) > 1e-6


# 160 images, one epoch of 5 steps of 32: 320 views per path.
STEPS, BATCH, N = 5, 32, 160
NO_OPS = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


@pytest.mark.parametrize(
    "name, op, prob",
    [
        ("jitter", dict(jitter_prob=0.8), 0.8),
        ("grayscale", dict(grayscale_prob=0.2), 0.2),
        ("blur", dict(blur_prob=0.5, blur_sigma=(1.0, 2.0)), 0.5),
    ],
)
def test_each_op_is_drawn_as_often_on_the_device_as_on_the_host(name, op, prob):
    source = synthetic(N)
    only = augment.TwoViewAugment(image_size=SIZE, **{**NO_OPS, **op})
    crops_only = augment.TwoViewAugment(image_size=SIZE, **NO_OPS)
    # Different seeds on the two paths: independent draws, compared as two binomial samples.
    host = _changed(
        _views(host_batches(source, only, STEPS, seed=1, batch=BATCH)),
        _views(host_batches(source, crops_only, STEPS, seed=1, batch=BATCH)),
    )
    device = _changed(
        _views(device_batches(source, only, STEPS, seed=2, batch=BATCH)),
        _views(device_batches(source, crops_only, STEPS, seed=2, batch=BATCH)),
    )
    n = len(host)
    sd = np.sqrt(prob * (1 - prob) / n)
    assert abs(host.mean() - prob) < 4 * sd, (name, host.mean())
    assert abs(device.mean() - prob) < 4 * sd, (name, device.mean())
    assert abs(host.mean() - device.mean()) < 4 * np.sqrt(2) * sd


def test_grayscale_views_are_gray_on_both_paths_at_the_recipes_rate():
    source = synthetic(N)
    rates = []
    for views in (
        _views(host_batches(source, RECIPE, STEPS, seed=1, batch=BATCH)),
        _views(device_batches(source, RECIPE, STEPS, seed=2, batch=BATCH)),
    ):
        gray = np.abs(views - views[..., :1]).reshape(len(views), -1).max(axis=1) < 1e-5
        rates.append(gray.mean())
    sd = np.sqrt(0.2 * 0.8 / (2 * N))
    assert all(abs(r - 0.2) < 4 * sd for r in rates), rates


def test_output_moments_match_between_the_paths():
    source = synthetic(N)
    host = _views(host_batches(source, RECIPE, STEPS, seed=1, batch=BATCH))
    device = _views(device_batches(source, RECIPE, STEPS, seed=2, batch=BATCH))
    # Per-view channel means and standard deviations: their averages over 640 views each.
    for stat in (lambda v: v.mean(axis=(1, 2)), lambda v: v.std(axis=(1, 2))):
        h, d = stat(host), stat(device)
        se = np.sqrt(h.var(axis=0) / len(h) + d.var(axis=0) / len(d))
        assert np.all(np.abs(h.mean(axis=0) - d.mean(axis=0)) < 4 * se + 1e-3), (h.mean(0), d.mean(0), se)


def test_the_stage_compiles_with_xla_and_draws_deterministically_at_the_recipes_rates():
    images = tf.cast(tf.random.stateless_uniform([256, SIZE, SIZE, 3], seed=[1, 2], maxval=255), tf.uint8)
    seed = tf.constant([3, 4], tf.int64)
    gray_only = augment.TwoViewAugment(image_size=SIZE, **{**NO_OPS, "grayscale_prob": 0.2})
    compiled = tf.function(lambda x, s: device_augment.appearance(x, s, gray_only), jit_compile=True)
    first, again = compiled(images, seed).numpy(), compiled(images, seed).numpy()
    np.testing.assert_array_equal(first, again)
    gray = np.abs(first - first[..., :1]).reshape(256, -1).max(axis=1) < 1e-6
    assert abs(gray.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 256)
    full = tf.function(lambda x, s: device_augment.appearance(x, s, RECIPE), jit_compile=True)(images, seed).numpy()
    assert full.shape == (256, SIZE, SIZE, 3) and 0.0 <= full.min() and full.max() <= 1.0


def test_auto_placement_is_host_without_an_accelerator_and_device_on_tpu():
    assert not device_augment.accelerator_present()
    assert device_augment.resolve_augment_on("auto") == "host"
    assert device_augment.resolve_augment_on("auto", "tpu") == "device"
    assert device_augment.resolve_augment_on("device") == "device"
    simtriplet = config.replace(config.PretrainConfig(), method="simtriplet", **{"data.dataset": "synthetic_tiles"})
    assert builders.augment_placement(simtriplet) == "host"
    with pytest.raises(ValueError, match="augment_on=device supports method=simsiam only"):
        config.replace(simtriplet, augment_on="device").validate()
    with pytest.raises(ValueError, match="augment_on must be one of"):
        config.replace(config.PretrainConfig(), augment_on="gpu").validate()


@pytest.mark.slow
def test_pretraining_on_the_device_path_trains_like_the_host_path(tmp_path):
    """The run itself; a resume is the host path's (the same checkpoints, and crops deterministic in
    seed and step: `test_crops_are_uint8_and_deterministic_in_seed_and_step`)."""
    straight = tiny_config(tmp_path / "straight", checkpoint_every_steps=100, augment_on="device")
    metrics = pretrain.run(straight)
    assert metrics["step"] == 6 and np.isfinite(metrics["loss"])

    # The host path on the same run settings trains on the same views up to the uint8 crops.
    host = tiny_config(tmp_path / "host", checkpoint_every_steps=100, augment_on="host")
    host_loss = pretrain.run(host)["loss"]
    assert abs(host_loss - metrics["loss"]) < 0.05
