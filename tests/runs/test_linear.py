"""Linear evaluation: LinearProbe, the cached-feature probe's optimizers, the simsiam-linear job and CLI."""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_pretrain_run

from simsiam_tf import config, models, optim
from simsiam_tf.errors import RunError
from simsiam_tf.evaluation import probe
from simsiam_tf.models import backbones
from simsiam_tf.runs import linear
from simsiam_tf.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_DATA = {"data.image_size": 16, "data.num_train_examples": 64, "data.num_eval_examples": 32}
TINY_FLAGS = [
    "--width_multiplier=0.125",
    "--image_size=16",
    "--num_train_examples=64",
    "--num_eval_examples=32",
    "--batch_size=16",
    "--epochs=1",
    "--verbose=0",
]
METRIC_KEYS = {"top1", "top5", "sanity_check", "init_from", "mode", "step", "total_steps"}


def run_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.linear", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny SimSiam pretraining run on the synthetic set, written by the pretraining job."""
    return tiny_pretrain_run(tmp_path_factory, **{k.split(".", 1)[1]: v for k, v in TINY_DATA.items()})


def tiny_linear(init_from, model_dir, **changes):
    base = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "batch_size": 16,
        "epochs": 1,
        "checkpoint_every_steps": 2,
        "augment": True,
        "compare_baselines": False,
    }
    base.update(TINY_DATA)
    base.update(changes)
    return config.replace(config.LinearConfig(init_from=init_from), **base)


def tiny_encoder():
    return backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.125)


# --------------------------------------------------------------------------- LinearProbe


def test_linear_probe_trains_only_the_classifier_and_keeps_bn_statistics():
    keras.utils.set_random_seed(0)
    encoder = tiny_encoder()
    model = models.LinearProbe(encoder, num_classes=3)
    assert not encoder.trainable
    assert [v.path for v in model.trainable_variables] == [v.path for v in model.classifier.trainable_variables]
    kernel = model.classifier.kernel.numpy()
    assert abs(kernel.std() - 0.01) < 0.003 and not model.classifier.bias.numpy().any()

    before = [v.numpy().copy() for v in encoder.weights]
    model.compile(
        optimizer=probe.linear_optimizer("sgd", 0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    # Images far from the BN moving statistics (mean 0, variance 1): a BN layer in
    # training mode would move them at once.
    images = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32") * 5.0
    model.fit(images, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    for variable, value in zip(encoder.weights, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
    assert not np.array_equal(model.classifier.kernel.numpy(), kernel)
    assert model(images[:2]).shape == (2, 3)


# --------------------------------------------------------------------------- cached-feature probe


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    return (centres[labels] + rng.normal(size=(n, 4))).astype("float32"), labels


@pytest.mark.parametrize("optimizer", ["lars", "sgd"])
def test_train_linear_on_features_with_each_optimizer(optimizer):
    train_x, train_y = _blobs(96, 0)
    test_x, test_y = _blobs(48, 1)
    classifier = probe.build_linear_classifier(3, feature_dim=4)
    # LARS moves each parameter by ~trust * lr * |w| per step (the bias too, as apex's LARC), so it
    # needs a far larger lr.
    lr = 100.0 if optimizer == "lars" else 0.1
    result = probe.train_linear_on_features(
        train_x,
        train_y,
        test_x,
        test_y,
        3,
        epochs=20,
        batch_size=32,
        base_lr=lr,
        standardize=False,
        optimizer=optimizer,
        weight_decay=1e-4,
        classifier=classifier,
    )
    assert result["top1"] > 0.9 and result["top5"] == 1.0
    logits = classifier(test_x).numpy()
    assert probe.topk_accuracy(logits, test_y, 1) == result["top1"]


def test_linear_optimizer_names():
    lars = probe.linear_optimizer("lars", 0.1, weight_decay=1e-4)
    assert isinstance(lars, optim.LARS) and lars.trust_coefficient == 0.001 and lars.coupled_weight_decay == 1e-4
    assert isinstance(probe.linear_optimizer("sgd", 0.1), optim.CoupledSGD)
    with pytest.raises(ValueError, match="optimizer must be one of lars, sgd"):
        probe.linear_optimizer("adam", 0.1)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"init_from": None}, "init_from is required"),
        ({"cache_features": True, "augment": True}, "cache_features=true needs augment=false"),
        ({"optimizer": "adam"}, "optimizer must be one of lars, sgd"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"crop_scale": (0.5, 0.1)}, "crop_scale must satisfy"),
        ({"runtime.model_dir": "outputs/demo"}, "lies in model_dir"),
        ({"model.backbone": "vgg16"}, "unknown backbone"),
    ],
)
def test_linear_config_names_the_problem(changes, message):
    bad = config.replace(config.LinearConfig(init_from="outputs/demo"), **changes)
    with pytest.raises(ValueError, match=message):
        bad.validate()


def test_cache_features_defaults_to_not_augment():
    c = config.LinearConfig(init_from="outputs/demo", augment=True)
    assert not c.cached
    assert config.replace(c, augment=False).cached
    assert not config.replace(c, augment=False, cache_features=False).cached


# --------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def end_to_end(pretrained, tmp_path_factory):
    """The paper's protocol (augmented crops through the frozen encoder) on the tiny run: (run directory, metrics)."""
    model_dir = tmp_path_factory.mktemp("end_to_end")
    return model_dir, linear.run(tiny_linear(pretrained, model_dir, checkpoint_every_steps=3))


def test_both_modes_end_to_end_on_a_real_pretraining_run(pretrained, end_to_end, tmp_path):
    e2e_dir, e2e = end_to_end
    cached = linear.run(tiny_linear(pretrained, tmp_path / "cached", augment=False, compare_random_init=True))
    assert e2e["mode"] == "end_to_end" and cached["mode"] == "cached_features"
    for metrics, model_dir in ((e2e, e2e_dir), (cached, tmp_path / "cached")):
        assert metrics["sanity_check"] == "passed"
        assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
        assert metrics["step"] == metrics["total_steps"] == 4
        assert re.search(r"ckpt-\d+$", metrics["init_from"])
        assert json.load(open(model_dir / "metrics.json")) == metrics
        assert os.listdir(model_dir / "logs")
        assert checkpoints.RunCheckpoint(str(model_dir)).latest.endswith("ckpt-4")
    assert set(cached) - set(e2e) == {"random_init_top1", "random_init_top5"}
    assert set(e2e) >= METRIC_KEYS
    assert 0.0 <= cached["random_init_top1"] <= 1.0

    # A finished run resumes to the same numbers without training again.
    again = linear.run(tiny_linear(pretrained, tmp_path / "cached", augment=False, compare_random_init=True))
    assert again == {**cached, "train_seconds": again["train_seconds"]}


def test_resumed_mid_epoch_matches_an_uninterrupted_run(pretrained, end_to_end, tmp_path):
    whole, reference = end_to_end
    # The same run as if killed after step 3 of its 4: only the step-3 checkpoint is there.
    parts = tmp_path / "parts"
    shutil.copytree(whole / "checkpoints", parts / "checkpoints")
    for name in os.listdir(parts / "checkpoints"):
        if name.startswith("ckpt-") and not name.startswith("ckpt-3."):
            os.remove(parts / "checkpoints" / name)
    (parts / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-3"\n'
    )
    resumed = linear.run(tiny_linear(pretrained, parts, checkpoint_every_steps=3))
    assert resumed["step"] == 4 and resumed["top1"] == reference["top1"]
    kernel = "model/classifier/_kernel/.ATTRIBUTES/VARIABLE_VALUE"
    final = [tf.train.load_checkpoint(str(d / "checkpoints" / "ckpt-4")).get_tensor(kernel) for d in (whole, parts)]
    np.testing.assert_array_equal(final[0], final[1])


class StatsLeakingProbe(models.LinearProbe):
    """A broken probe: its training step moves the encoder's BatchNorm moving mean, as BN in training mode does."""

    def call(self, x, training=False):
        logits = super().call(x, training)
        if training:
            bn = next(l for l in self.encoder.layers if isinstance(l, keras.layers.BatchNormalization))
            bn.moving_mean.assign(0.9 * bn.moving_mean + 0.1 * keras.ops.ones_like(bn.moving_mean))
        return logits


def test_sanity_check_catches_a_probe_that_updates_bn_statistics(pretrained, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "LinearProbe", StatsLeakingProbe)
    with pytest.raises(linear.EncoderChangedError, match=r"encoder variable stem_bn/moving_mean changed") as err:
        linear.run(tiny_linear(pretrained, tmp_path / "leak"))
    assert "sanity check failed" in str(err.value) and "1 of " in str(err.value)
    assert err.value.exit_code != 0
    assert not os.path.exists(tmp_path / "leak" / "metrics.json")


@pytest.mark.parametrize("backbone, width", [("resnet18_cifar", 0.25), ("resnet34_cifar", 0.125)])
def test_checkpoint_of_another_architecture_names_the_mismatch(pretrained, tmp_path, backbone, width):
    changes = {"model.backbone": backbone, "model.width_multiplier": width}
    with pytest.raises(RunError, match=rf"does not fit this encoder \({backbone}, width_multiplier {width}\)") as err:
        linear.run(tiny_linear(pretrained, tmp_path / "other", **changes))
    assert "incompatible tensor with shape" in str(err.value)


# --------------------------------------------------------------------------- the command line


def test_cli_run_writes_flags_and_metrics(pretrained, tmp_path):
    model_dir = tmp_path / "cli"
    result = run_cli(f"--init_from={pretrained}", f"--model_dir={model_dir}", "--augment=false", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.load(open(model_dir / "metrics.json"))
    assert metrics["mode"] == "cached_features" and metrics["sanity_check"] == "passed"
    assert 0.0 <= metrics["top1"] <= 1.0 and 0.0 <= metrics["top5"] <= 1.0
    flags_text = (model_dir / "flags.cfg").read_text()
    assert f"--init_from={pretrained}\n" in flags_text and "--augment=false\n" in flags_text
    assert "top-1" in result.stdout


def test_cli_init_from_nothing_names_the_path(tmp_path):
    missing = tmp_path / "no_such_run"
    result = run_cli(f"--init_from={missing}", f"--model_dir={tmp_path / 'out'}", *TINY_FLAGS)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no checkpoint found at") and str(missing) in last


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--init_from=outputs/demo", "--cache_features=true", "--augment=true"],
            "cache_features=true needs augment=false",
        ),
        ([], "init_from is required"),
    ],
)
def test_cli_incompatible_flags_fail_fast(args, message, tmp_path):
    result = run_cli(*args, f"--model_dir={tmp_path}", "--dry_run", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: {message}") and len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- recipes


def _flagfile(path):
    values = {}
    for line in open(path):
        match = re.match(r"^--(\w+)=(\S*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2)
    return values


def test_demo_linear_matches_the_demo_run():
    demo = config.PretrainConfig()
    expected = {
        "dataset": demo.data.dataset,
        "image_size": str(demo.data.image_size),
        "backbone": demo.model.backbone,
        "width_multiplier": str(float(demo.model.width_multiplier)),
        "init_from": demo.runtime.model_dir,
    }
    demo_cfg = os.path.join(ROOT, "flags", "demo.cfg")
    if os.path.exists(demo_cfg):
        written = _flagfile(demo_cfg)
        expected.update({k: written[k] for k in ("dataset", "image_size", "backbone") if k in written})
        if "width_multiplier" in written:
            expected["width_multiplier"] = str(float(written["width_multiplier"]))
        if "model_dir" in written:
            expected["init_from"] = written["model_dir"]
    probe_cfg = _flagfile(os.path.join(ROOT, "flags", "demo_linear.cfg"))
    probe_cfg["width_multiplier"] = str(float(probe_cfg["width_multiplier"]))
    assert {k: probe_cfg.get(k) for k in expected} == expected
    assert probe_cfg["compare_random_init"] == "true"


@pytest.mark.parametrize("name", ["imagenet_resnet50_linear.cfg", "cifar10_resnet18_linear.cfg"])
def test_paper_recipes_use_the_reference_protocol(name):
    values = _flagfile(os.path.join(ROOT, "flags", name))
    assert open(os.path.join(ROOT, "flags", name)).readline().strip() == "# tool: simsiam-linear"
    assert {k: values[k] for k in ("optimizer", "batch_size", "base_lr", "weight_decay", "epochs", "augment")} == {
        "optimizer": "lars",
        "batch_size": "4096",
        "base_lr": "0.1",
        "weight_decay": "0.0",
        "epochs": "90",
        "augment": "true",
    }


# --------------------------------------------------------------------------- fitting the run to the data


def test_small_training_sets_get_sgd_on_cached_standardised_features_and_a_fitted_batch():
    small, notes, warnings = linear.batch_fit.fit_linear_config(config.LinearConfig(init_from="r"), 5000)
    assert (small.optimizer, small.augment, small.standardize, small.batch_size) == ("sgd", False, True, 256)
    assert small.cached and warnings == []
    assert "--optimizer=sgd --augment=false --standardize=true" in notes[0]
    assert "using batch 256 (20 steps per epoch" in notes[1]
    large, notes, _ = linear.batch_fit.fit_linear_config(config.LinearConfig(init_from="r"), 1_281_167)
    assert (large.optimizer, large.augment, large.standardize, large.batch_size) == ("lars", True, False, 4096)
    assert notes == []


def test_choices_given_stay_and_a_batch_given_only_warns():
    given = config.LinearConfig(init_from="r", optimizer="lars", batch_size=4096)
    fitted, _, warnings = linear.batch_fit.fit_linear_config(given, 5000)
    assert (fitted.optimizer, fitted.batch_size, fitted.augment) == ("lars", 4096, False)
    assert warnings == [
        "--batch_size=4096 leaves 2 steps per epoch on 5000 training images (fewer than 20); --batch_size=256 "
        "would give 20"
    ]
    # end-to-end training asked for: the features stay raw
    fitted, _, _ = linear.batch_fit.fit_linear_config(config.LinearConfig(init_from="r", augment=True), 5000)
    assert (fitted.augment, fitted.standardize, fitted.optimizer, fitted.batch_size) == (True, False, "sgd", 128)


def test_standardised_probe_is_folded_into_a_classifier_on_raw_features():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(40, 6)).astype(np.float32)
    mean, std = probe.feature_statistics(x)
    classifier = probe.build_linear_classifier(4, 6)
    classifier.set_weights([rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)])
    kernel, bias = classifier.get_weights()
    expected = ((x - mean) / std) @ kernel + bias
    probe.fold_standardization(classifier, mean, std)
    np.testing.assert_allclose(classifier(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def write_fake_run(run_dir, lines):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "flags.cfg"), "w") as f:
        f.write("# Resolved flags of this run; repeat it with --flagfile=<this file>.\n" + "\n".join(lines) + "\n")


def test_cli_takes_data_and_encoder_flags_from_the_run_and_the_command_line_wins(tmp_path):
    run_dir = str(tmp_path / "pretrain")
    write_fake_run(
        run_dir,
        [
            f"--model_dir={run_dir}",
            "--seed=7",
            "--dataset=synthetic",
            "--image_size=24",
            "--num_train_examples=300",
            "--backbone=resnet34_cifar",
            "--width_multiplier=0.5",
            "--dim=64",
            "--flip_prob=0.0",
            "--batch_size=32",
            "--base_lr=0.05",
        ],
    )
    recipe = tmp_path / "recipe.cfg"
    recipe.write_text("--width_multiplier=0.125\n")
    result = run_cli(
        f"--init_from={run_dir}",
        f"--model_dir={tmp_path / 'probe'}",
        "--image_size=16",
        f"--flagfile={recipe}",
        "--dry_run",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    resolved = dict(line[2:].split("=", 1) for line in result.stdout.splitlines() if line.startswith("--"))
    # from the run: what describes its data and encoder; not its optimisation flags
    assert {k: resolved[k] for k in ("seed", "dataset", "num_train_examples", "backbone", "flip_prob")} == {
        "seed": "7",
        "dataset": "synthetic",
        "num_train_examples": "300",
        "backbone": "resnet34_cifar",
        "flip_prob": "0.0",  # mirror images: the run said they are not the same thing (digits, text)
    }
    assert "batch_size" not in resolved and resolved["base_lr"] == "0.1"
    # given on the command line or in a flagfile: kept
    assert resolved["image_size"] == "16" and resolved["width_multiplier"] == "0.125"
    assert f"from the flags.cfg of {run_dir}:" in result.stdout


def test_cli_prints_the_batch_lr_and_steps_it_uses(pretrained, tmp_path):
    model_dir = tmp_path / "fitted"
    flags = [f for f in TINY_FLAGS if not f.startswith("--batch_size")]
    result = run_cli(f"--init_from={pretrained}", f"--model_dir={model_dir}", "--compare_baselines=false", *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    # 64 images: 4096 -> 16, the floor (4 steps); sgd on cached standardised features as for any small set
    line = (
        "linear probe: batch 16, lr 0.00625 (base_lr 0.1 x 16 / 256), 4 steps per epoch x 1 epochs = 4 steps; "
        "sgd on cached, standardised features"
    )
    assert line in result.stdout.splitlines()
    metrics = json.load(open(model_dir / "metrics.json"))
    assert {k: metrics[k] for k in ("batch_size", "lr", "steps_per_epoch", "total_steps", "optimizer", "mode")} == {
        "batch_size": 16,
        "lr": 0.00625,
        "steps_per_epoch": 4,
        "total_steps": 4,
        "optimizer": "sgd",
        "mode": "cached_features",
    }
    assert metrics["warnings"] == []


@pytest.mark.slow
def test_baselines_go_through_the_same_probe(pretrained, tmp_path):
    metrics = linear.run(tiny_linear(pretrained, tmp_path / "baselines", augment=None, compare_baselines=True))
    assert 0.0 <= metrics["pixels_top1"] <= metrics["pixels_top5"] <= 1.0
    assert 0.0 <= metrics["random_init_top1"] <= 1.0
    assert os.path.exists(tmp_path / "baselines" / "pixels" / "checkpoints")
    assert metrics["warnings"] == linear.baselines.baseline_warnings(metrics)
    assert json.load(open(tmp_path / "baselines" / "metrics.json")) == metrics
