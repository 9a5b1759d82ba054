"""The exported signatures refuse bad requests (dtype, rank, channels, empty batches, oversized images)
with an error that names the rule, and keep serving: the next good request gives the same outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import serving
from simsiam_tf.serving import model as serving_model

SIZE = 8
MAX_PIXELS = 10_000  # 100 x 100


def tiny_encoder():
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()]
    )
    encoder(np.zeros((1, SIZE, SIZE, 3), np.float32))
    return encoder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    encoder = tiny_encoder()
    path = str(tmp_path_factory.mktemp("export") / "saved_model")
    serving.export_saved_model(path, encoder, SIZE, center_crop=False, max_image_pixels=MAX_PIXELS)
    loaded = tf.saved_model.load(path)
    return loaded, encoder


GOOD = np.random.default_rng(0).integers(0, 256, (2, 12, 10, 3), dtype=np.uint8)

# (name, signature, images, the error's words): each request is sent to a running model in turn.
BAD_REQUESTS = [
    # Another dtype than the signature's is refused by TensorFlow before the graph runs.
    ("int32 to the uint8 signature", "embed", GOOD.astype(np.int32), "expected to be a uint8 tensor"),
    ("float32 to the uint8 signature", "embed", GOOD.astype(np.float32) / 255, "expected to be a uint8 tensor"),
    ("float64 to the float32 signature", "embed_float", GOOD.astype(np.float64) / 255, "expected to be a float tensor"),
    ("rank 3", "embed", GOOD[0], "images must be [batch, height, width, 3]"),
    ("rank 5", "embed", GOOD[None], "images must be [batch, height, width, 3]"),
    ("2 channels", "embed", GOOD[..., :2], "images must be [batch, height, width, 3]"),
    ("4 channels", "embed", np.concatenate([GOOD, GOOD[..., :1]], -1), "images must be [batch, height, width, 3]"),
    ("an empty batch", "embed", GOOD[:0], "images must hold at least one image"),
    ("0 rows", "embed", GOOD[:, :0], "images must hold at least one image"),
    ("an empty float batch", "embed_float", GOOD[:0].astype(np.float32), "images must hold at least one image"),
    ("101 x 100 pixels", "embed", np.zeros((1, 101, 100, 3), np.uint8), "at most 10000 pixels each"),
    ("0-255 floats", "embed_float", GOOD.astype(np.float32), "must lie in [0, 1]"),
]


@pytest.mark.parametrize("name, signature, images, words", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_a_bad_request_is_refused_and_the_next_good_one_served(served, name, signature, images, words):
    loaded, encoder = served
    embed = loaded.signatures["embed"]
    first = embed(images=tf.constant(GOOD))["embedding"].numpy()
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError)) as raised:
        loaded.signatures[signature](images=tf.constant(images))
    assert words in str(raised.value), str(raised.value)[:2000]
    again = embed(images=tf.constant(GOOD))["embedding"].numpy()
    np.testing.assert_array_equal(again, first)
    # The oracle: the encoder on the images resized as the evaluation does (a plain bilinear resize).
    expected = encoder(tf.image.resize(GOOD.astype(np.float32) / 255.0, (SIZE, SIZE), antialias=True))
    np.testing.assert_allclose(again, expected.numpy(), atol=1e-5)


def test_images_at_the_limit_are_served(served):
    loaded, _ = served
    out = loaded.signatures["embed"](images=tf.zeros((1, 100, 100, 3), tf.uint8))["embedding"]
    assert out.shape == (1, 4) and np.all(np.isfinite(out.numpy()))


def test_the_keras_model_refuses_the_same_requests():
    model = serving_model.ServingModel(tiny_encoder(), SIZE, False, max_image_pixels=MAX_PIXELS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must hold at least one image"):
        model(tf.constant(GOOD[:0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 10000 pixels each"):
        model(tf.zeros((1, 101, 100, 3), tf.uint8))
    assert model(tf.constant(GOOD))["embedding"].shape == (2, 4)
    assert serving_model.ServingModel.from_config(model.get_config()).max_image_pixels == MAX_PIXELS


def test_the_default_limit_is_fifty_million_pixels(tmp_path):
    images = tf.zeros((1, 1, 50_000_001, 1), tf.uint8)  # one row: 48 MB, not 150
    model = serving_model.ServingModel(tiny_encoder(), SIZE, False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 50000000 pixels each"):
        model.embed(images)
