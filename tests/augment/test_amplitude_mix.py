"""The Fourier amplitude mix (simsiam_tf.augment.amplitude_mix) against a NumPy FFT oracle."""

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import augment
from simsiam_tf import config as config_lib
from simsiam_tf.augment import amplitude_mix as am
from simsiam_tf.augment import views
from simsiam_tf.augment.images import BRANCH, GATHER, SELECT


def _oracle(images, partners, weights):
    """NumPy: per channel, |F| mixed with the partner's |F|, the image's own phase, inverse FFT."""
    spectrum = np.fft.fft2(images.astype(np.float64), axes=(1, 2))
    other = np.abs(np.fft.fft2(partners.astype(np.float64), axes=(1, 2)))
    w = np.asarray(weights, np.float64)[:, None, None, None]
    amplitude = (1 - w) * np.abs(spectrum) + w * other
    return np.real(np.fft.ifft2(amplitude * np.exp(1j * np.angle(spectrum)), axes=(1, 2)))


def _images(seed, shape=(5, 12, 10, 3)):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def test_amplitude_mix_matches_numpy():
    images, partners = _images(0), _images(1)
    weights = np.array([0.0, 0.25, 0.5, 0.8, 1.0], np.float32)
    out = am.amplitude_mix(images, partners, weights).numpy()
    np.testing.assert_allclose(out, _oracle(images, partners, weights), atol=2e-5)


def test_weight_zero_is_the_image_and_weight_one_has_the_partners_amplitude_and_own_phase():
    images, partners = _images(2, (2, 8, 8, 3)), _images(3, (2, 8, 8, 3))
    np.testing.assert_allclose(am.amplitude_mix(images, partners, [0.0, 0.0]).numpy(), images, atol=1e-5)
    out = am.amplitude_mix(images, partners, [1.0, 1.0]).numpy()
    f_out, f_img = np.fft.fft2(out, axes=(1, 2)), np.fft.fft2(images, axes=(1, 2))
    np.testing.assert_allclose(np.abs(f_out), np.abs(np.fft.fft2(partners, axes=(1, 2))), atol=1e-3)
    # Same phase: the spectra are parallel complex numbers (zero cross product, positive dot product).
    assert np.max(np.abs(np.imag(f_out * np.conj(f_img)))) < 1e-2
    assert np.all(np.real(f_out * np.conj(f_img)) > -1e-2)
    # The mean colour (the zero frequency) is the partner's.
    np.testing.assert_allclose(out.mean(axis=(1, 2)), partners.mean(axis=(1, 2)), atol=1e-5)


def test_random_mix_takes_another_image_of_the_batch_with_a_weight_in_range():
    images = _images(4)
    seed = tf.constant([3, 7])
    out = am.random_amplitude_mix(images, seed, 0.6).numpy()
    shift, weights = (t.numpy() for t in am.draw(seed, 5, 0.6))
    assert 1 <= shift <= 4
    assert np.all((0 <= weights) & (weights <= 0.6)) and len(set(weights.round(6))) == 5
    expected = np.clip(_oracle(images, np.roll(images, shift, axis=0), weights), 0, 1)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    np.testing.assert_array_equal(out, am.random_amplitude_mix(images, seed, 0.6).numpy())


def test_shifts_cover_every_other_image_and_one_image_is_unchanged():
    shifts = {int(am.draw(tf.constant([s, 0]), 4, 1.0)[0]) for s in range(60)}
    assert shifts == {1, 2, 3}
    one = _images(5, (1, 8, 8, 3))
    np.testing.assert_allclose(am.random_amplitude_mix(one, tf.constant([1, 2]), 1.0).numpy(), one, atol=1e-5)


def test_mix_removes_a_shared_grating_more_than_a_shared_shape():
    # A square on a grating: mixing with plain noise images weakens the grating's spectral peak
    # (an amplitude feature) while the square's edges (phase) stay where they were.
    y, x = np.mgrid[0:28, 0:28]
    grating = 0.5 + 0.4 * np.sin(2 * np.pi * 4 * x / 28)
    square = ((abs(y - 14) < 6) & (abs(x - 14) < 6)).astype(float)
    image = np.clip(0.3 * grating + 0.7 * square, 0, 1)
    noise = np.random.default_rng(6).uniform(0.3, 0.6, (28, 28))
    images = np.stack([image, noise])[..., None].repeat(3, axis=-1).astype(np.float32)
    out = am.amplitude_mix(images, images[::-1], [0.8, 0.0]).numpy()[0, ..., 0]
    peak = lambda im: np.abs(np.fft.fft2(im)[0, 4])  # noqa: E731
    assert peak(out) < 0.35 * peak(image)
    # The square is still the image's main pattern (correlation 0.95 before the mix, 0.72 after).
    assert np.corrcoef(out.ravel(), square.ravel())[0, 1] > 0.65


def test_views_mix_before_the_colour_ops_and_paths_agree():
    crops = (_images(7, (6, 16, 16, 3)) * 255).astype(np.uint8)
    seed = tf.constant([5, 9])
    mixed = augment.TwoViewAugment(image_size=16, amplitude_mix=0.7, blur_prob=0.0)
    plain = augment.TwoViewAugment(image_size=16, blur_prob=0.0)
    mix_seed, rest = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    expected = plain.appearance(am.random_amplitude_mix(augment.to_float(crops), mix_seed, 0.7), rest).numpy()
    for mode in (GATHER, SELECT):
        np.testing.assert_allclose(views.appearance(crops, seed, mixed, mode).numpy(), expected, atol=1e-5)
    # Off, the views are exactly as before (no seed is spent on the mix).
    assert augment.TwoViewAugment(image_size=16, blur_prob=0.0, amplitude_mix=0.0) == plain
    with pytest.raises(ValueError, match="amplitude_mix mixes the images of a batch"):
        views.appearance(crops[:1], seed, mixed, BRANCH)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_amplitude_mix_is_refused(value):
    with pytest.raises(ValueError, match=r"amplitude_mix must be the largest mixing weight in \[0, 1\]"):
        config_lib.AugmentConfig(amplitude_mix=value).validate()
    with pytest.raises(ValueError, match=r"amplitude_mix must be the largest mixing weight in \[0, 1\]"):
        augment.TwoViewAugment(image_size=16, amplitude_mix=value)


def test_the_setting_reaches_the_views():
    from simsiam_tf import builders

    config = config_lib.PretrainConfig(augment=config_lib.AugmentConfig(amplitude_mix=0.5))
    assert builders.make_augment(config).amplitude_mix == 0.5


def test_image_files_are_cropped_one_by_one_and_mixed_in_batches():
    from types import SimpleNamespace

    from simsiam_tf.data import pipeline

    files = SimpleNamespace(read=lambda path: path, image_shape=None)
    assert pipeline._from_files(files, augment.TwoViewAugment(image_size=16))
    assert not pipeline._from_files(files, augment.TwoViewAugment(image_size=16, amplitude_mix=0.5))


def test_two_view_dataset_takes_the_option(tmp_path):
    from PIL import Image

    from simsiam_tf.data import two_view_dataset

    paths = []
    for i, width in enumerate([16, 14, 12, 16]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((_images(i, (16, width, 3)) * 255).astype(np.uint8)).save(paths[-1])
    common = dict(seed=1, shuffle=False, blur_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0)
    ((a, b),) = list(two_view_dataset(paths, 4, 8, amplitude_mix=1.0, **common))
    ((plain_a, _),) = list(two_view_dataset(paths, 4, 8, **common))
    assert a.shape == (4, 8, 8, 3) and float(tf.reduce_min(a)) >= 0.0 and float(tf.reduce_max(a)) <= 1.0
    assert np.abs(a.numpy() - plain_a.numpy()).max() > 0.05
