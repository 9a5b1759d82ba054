"""Label budgets: the per-class draw, its use by simsiam-linear (probe and --finetune) and simsiam-verify."""

import hashlib
import json
import os

import numpy as np
import pytest
from conftest import tiny_pretrain_run

from simsiam_tf import config
from simsiam_tf.data import label_budget, load_source

# 3 classes of 12, 7 and 5 images, interleaved.
LABELS = np.array([0] * 12 + [1] * 7 + [2] * 5)[np.random.default_rng(5).permutation(24)]


def test_labels_per_class_takes_exactly_n_of_each_class_and_only_that_class():
    budget = label_budget.draw_label_budget(LABELS, labels_per_class=4, seed=3)
    assert budget.counts == {0: 4, 1: 4, 2: 4}
    assert np.bincount(LABELS[budget.indices]).tolist() == [4, 4, 4]
    assert budget.indices.dtype == np.int64 and np.all(np.diff(budget.indices) > 0)
    assert budget.indices.min() >= 0 and budget.indices.max() < LABELS.size


def test_same_seed_same_indices_another_seed_other_indices():
    a = label_budget.draw_label_budget(LABELS, labels_per_class=3, seed=7)
    b = label_budget.draw_label_budget(LABELS.copy(), labels_per_class=3, seed=7)
    c = label_budget.draw_label_budget(LABELS, labels_per_class=3, seed=8)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.sha256 == b.sha256
    assert not np.array_equal(a.indices, c.indices) and a.sha256 != c.sha256


def test_hash_is_sha256_of_the_indices_as_int64():
    budget = label_budget.draw_label_budget(LABELS, labels_per_class=2, seed=0)
    expected = hashlib.sha256(np.array(sorted(budget.indices), dtype="<i8").tobytes()).hexdigest()
    assert budget.sha256 == expected
    described = budget.describe()
    assert described["indices_sha256"] == expected
    assert described["counts_per_class"] == {"0": 2, "1": 2, "2": 2}
    assert described["seed"] == 0 and described["labels_per_class"] == 2 and described["num_labelled"] == 6
    json.dumps(described)


def test_fraction_rounds_half_up_per_class_and_keeps_at_least_one():
    # 0.25 of 12, 7, 5 images: 3, 1.75 -> 2, 1.25 -> 1
    assert label_budget.draw_label_budget(LABELS, label_fraction=0.25, seed=0).counts == {0: 3, 1: 2, 2: 1}
    # 0.01 of any class here rounds to 0: each class still gets one
    assert label_budget.draw_label_budget(LABELS, label_fraction=0.01, seed=0).counts == {0: 1, 1: 1, 2: 1}
    # 0.5 of 7 = 3.5 rounds up to 4; 0.5 of 5 = 2.5 -> 3
    assert label_budget.draw_label_budget(LABELS, label_fraction=0.5, seed=0).counts == {0: 6, 1: 4, 2: 3}
    everything = label_budget.draw_label_budget(LABELS, label_fraction=1.0, seed=0)
    np.testing.assert_array_equal(everything.indices, np.arange(LABELS.size))


def test_a_class_smaller_than_n_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"class 2 has 5 images, fewer than labels_per_class=6.*--label_fraction"):
        label_budget.draw_label_budget(LABELS, labels_per_class=6, seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels_per_class": 2, "label_fraction": 0.1}, "give one of them"),
        ({"labels_per_class": 0}, "labels_per_class must be at least 1"),
        ({"label_fraction": 0.0}, r"label_fraction must lie in \(0, 1\]"),
        ({"label_fraction": 1.5}, r"label_fraction must lie in \(0, 1\]"),
        ({}, "needs labels_per_class or label_fraction"),
    ],
)
def test_bad_budgets_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        label_budget.draw_label_budget(LABELS, seed=0, **kwargs)


@pytest.mark.parametrize("cls", [config.LinearConfig, config.VerifyConfig])
def test_configs_validate_the_budget(cls):
    base = cls(init_from="somewhere", runtime=config.RuntimeConfig(model_dir="elsewhere"))
    config.replace(base, labels_per_class=10).validate()
    config.replace(base, label_fraction=0.1).validate()
    with pytest.raises(ValueError, match="give one of them"):
        config.replace(base, labels_per_class=10, label_fraction=0.1).validate()
    with pytest.raises(ValueError, match="at least 1"):
        config.replace(base, labels_per_class=0).validate()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        config.replace(base, label_fraction=0.0).validate()


def test_finetune_refuses_cached_features_and_lars():
    base = config.LinearConfig(init_from="somewhere", finetune=True)
    base.validate()
    for changes, message in (
        ({"cache_features": True}, "cache_features"),
        ({"standardize": True}, "standardize"),
        ({"augment": False}, "augmented crops"),
        ({"optimizer": "lars"}, "optimizer=sgd"),
    ):
        with pytest.raises(ValueError, match=message):
            config.replace(base, **changes).validate()


def test_subset_source_keeps_the_images_at_the_indices():
    source = load_source("synthetic", split="train", image_size=16, seed=0, num_examples=30)
    labels = label_budget.source_labels(source)
    images = np.stack([x for x, _ in source.dataset.as_numpy_iterator()])
    budget = label_budget.draw_label_budget(labels, labels_per_class=2, seed=1)
    subset = label_budget.subset_source(source, budget.indices)
    got = list(subset.dataset.as_numpy_iterator())
    assert subset.num_examples == len(got) == budget.indices.size
    np.testing.assert_array_equal(np.stack([x for x, _ in got]), images[budget.indices])
    np.testing.assert_array_equal([y for _, y in got], labels[budget.indices])


# --------------------------------------------------------------------------- the jobs


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return tiny_pretrain_run(tmp_path_factory, image_size=16, num_train_examples=64, num_eval_examples=32)


def tiny_linear(init_from, model_dir, **changes):
    base = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "data.image_size": 16,
        "data.num_train_examples": 64,
        "data.num_eval_examples": 32,
        "epochs": 2,
        "compare_baselines": False,
    }
    base.update(changes)
    return config.replace(config.LinearConfig(init_from=init_from), **base)


def test_linear_probe_trains_on_the_budget_and_records_it(pretrained, tmp_path):
    from simsiam_tf.runs import linear

    metrics = linear.run(tiny_linear(pretrained, tmp_path / "probe", labels_per_class=3))
    source = load_source("synthetic", split="train", image_size=16, seed=0, num_examples=64)
    expected = label_budget.draw_label_budget(label_budget.source_labels(source), labels_per_class=3, seed=0)
    b = metrics["label_budget"]
    assert b["indices_sha256"] == expected.sha256 and b["num_labelled"] == 3 * source.num_classes
    assert set(b["counts_per_class"].values()) == {3}
    assert metrics["num_train_examples"] == 3 * source.num_classes
    assert metrics["sanity_check"] == "passed"
    written = json.load(open(os.path.join(tmp_path, "probe", "metrics.json")))
    assert written["label_budget"] == b


def test_finetune_changes_the_encoder_and_trains(pretrained, tmp_path):
    from simsiam_tf.runs import linear

    cfg = tiny_linear(pretrained, tmp_path / "finetune", labels_per_class=4, finetune=True, batch_size=16, base_lr=0.4)
    captured = {}
    original = linear.probe_encoder

    def spy(config_, strategy, encoder, *args, **kwargs):
        captured["before"] = linear.snapshot(encoder)
        result = original(config_, strategy, encoder, *args, **kwargs)
        captured["after"] = linear.snapshot(encoder)
        captured["config"] = config_
        return result

    linear.probe_encoder = spy
    try:
        metrics = linear.run(cfg)
    finally:
        linear.probe_encoder = original
    assert metrics["finetune"] and metrics["sanity_check"].startswith("skipped")
    assert metrics["mode"] == "end_to_end" and metrics["optimizer"] == "sgd"
    assert captured["config"].augment and not captured["config"].standardize
    before, after = dict(captured["before"]), dict(captured["after"])
    kernels = [p for p in before if "conv" in p and p.endswith("kernel")]
    moving = [p for p in before if p.endswith("moving_mean")]
    assert kernels and moving
    assert any(not np.array_equal(before[p], after[p]) for p in kernels), "no conv kernel was trained"
    assert any(not np.array_equal(before[p], after[p]) for p in moving), "BatchNorm did not run in training mode"
    assert metrics["step"] == metrics["total_steps"] > 0 and 0.0 <= metrics["top1"] <= 1.0


def test_verify_cuts_only_the_training_pool(pretrained, tmp_path):
    from simsiam_tf.runs import verify

    cfg = config.replace(
        config.VerifyConfig(init_from=pretrained),
        **{
            "runtime.model_dir": str(tmp_path / "verify"),
            "runtime.verbose": 0,
            "model.width_multiplier": 0.125,
            "data.image_size": 16,
            "data.num_train_examples": 200,
            "freeze_encoder": True,
            "closed_set": True,
            "labels_per_class": 2,
            "batch_size": 8,
            "epochs": 1,
            "steps_per_epoch": 2,
            "num_val_pairs": 20,
            "num_eval_pairs": 20,
            "num_trials": 4,
            "embedding_dim": 8,
            "hidden_dim": 16,
            "compare_pixels": False,
        },
    )
    source, eval_source = verify.load_sources(cfg)
    pools = verify.make_pools(cfg, source, eval_source)
    cut, budget = verify.apply_label_budget(cfg, pools)
    assert np.bincount(cut.train.labels).tolist() == [2] * source.num_classes
    assert set(cut.train.indices) <= set(pools.train.indices)
    np.testing.assert_array_equal(cut.evaluation.indices, pools.evaluation.indices)
    np.testing.assert_array_equal(cut.validation.indices, pools.validation.indices)
    metrics = verify.run(cfg)
    assert metrics["label_budget"]["indices_sha256"] == budget.sha256
    assert metrics["label_budget"]["num_labelled"] == 2 * source.num_classes


@pytest.mark.parametrize("tool", ["simsiam_tf.cli.linear", "simsiam_tf.cli.verify"])
def test_cli_takes_the_budget_flags_and_rejects_both_at_once(tool, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    common = [
        sys.executable,
        "-m",
        tool,
        f"--init_from={tmp_path / 'run'}",
        f"--model_dir={tmp_path / 'out'}",
        "--dry_run",
    ]
    ok = subprocess.run(common + ["--labels_per_class=10"], cwd=root, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "--labels_per_class=10" in ok.stdout
    both = subprocess.run(
        common + ["--labels_per_class=10", "--label_fraction=0.1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert both.returncode == 2 and "give one of them" in both.stderr
