"""bench/colour_digits.py: digits composited onto textured colour backgrounds, and the 28 px split."""

import os
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, BENCH)
    try:
        import colour_digits
        import small_images_eval

        yield colour_digits, small_images_eval
    finally:
        sys.path.remove(BENCH)


def test_stroke_over_background(modules):
    colour_digits, _ = modules
    digits = np.zeros((3, 12, 12), np.uint8)
    digits[:, 4:8, 3:9] = 255
    out = colour_digits.colourise(digits, seed=1)
    assert out.shape == (3, 12, 12, 3) and out.dtype == np.uint8
    again = colour_digits.colourise(digits, seed=1)
    np.testing.assert_array_equal(out, again)
    # Inside the stroke: one flat colour per image; its luminance far from the background's mean.
    for k in range(3):
        stroke = out[k, 4:8, 3:9].reshape(-1, 3)
        assert np.all(stroke == stroke[0])
        background = np.concatenate([out[k, :4].reshape(-1, 3), out[k, 8:].reshape(-1, 3)]) / 255.0
        luma = colour_digits.LUMA
        assert abs(stroke[0] / 255.0 @ luma - (background @ luma).mean()) >= colour_digits.MIN_CONTRAST - 0.02
        assert background.std(axis=0).max() > 0.02  # textured, not flat
    assert not np.array_equal(out[0, :4], out[1, :4])  # each image its own background


def test_half_mask_blends_stroke_and_background(modules):
    colour_digits, _ = modules
    digits = np.full((2, 8, 8), 128, np.uint8)
    rng = np.random.default_rng(5)
    background = colour_digits.backgrounds(rng, 2, 8)
    stroke = colour_digits.stroke_colours(rng, (background @ colour_digits.LUMA).mean(axis=(1, 2)))
    expected = np.round((background * (1 - 128 / 255) + stroke[:, None, None] * (128 / 255)) * 255)
    np.testing.assert_array_equal(colour_digits.colourise(digits, seed=5), expected.astype(np.uint8))


def test_split_is_stratified_and_tuning_leaves_the_holdout_unseen(modules):
    pytest.importorskip("sklearn")  # the benchmark's split is scikit-learn's ([bench] extra)
    _, ev = modules
    labels = np.repeat(np.arange(10), 50)
    train, test, name = ev.split(labels, 0.2, 0)
    assert len(test) == 100 and np.all(np.bincount(labels[test]) == 10) and "held-out 20%" in name
    inner_train, inner_val, inner_name = ev.split(labels, 0.2, 0, tune=True)
    assert not set(inner_train) & set(test) and not set(inner_val) & set(test)
    assert sorted(np.concatenate([inner_train, inner_val])) == sorted(train)
    assert "inner validation" in inner_name


def test_an_override_that_is_no_flag_is_refused_before_training(modules, tmp_path):
    _, ev = modules
    recipe = os.path.join(os.path.dirname(BENCH), "flags", "small_images_28.cfg")
    with pytest.raises(ValueError, match="--set names no simsiam-pretrain flag: amplitude_mixx"):
        ev.pretrain(recipe, str(tmp_path), str(tmp_path / "run"), {"amplitude_mixx": "1.0", "noevaluate": ""})
