import dataclasses

import pytest

from simsiam_tf import config


def test_defaults_validate():
    assert config.PretrainConfig().validate() is not None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 1}, "batch_size must be at least 2"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"base_lr": 0.0}, "base_lr must be a finite number in \\(0, inf\\)"),
        ({"momentum": 1.0}, r"momentum must be a finite number in \[0, 1\)"),
        ({"warmup_epochs": 5.0, "epochs": 5}, "warmup_epochs must be in"),
        ({"on_collapse": "panic"}, "on_collapse must be one of stop, warn, ignore"),
        ({"method": "byol"}, "method must be one of simsiam, simtriplet"),
        ({"model.backbone": "vgg16"}, "unknown backbone 'vgg16'"),
        ({"model.projector_layers": 4}, "projector_layers must be 2"),
        ({"model.use_predictor": False, "fix_pred_lr": True}, "fix_pred_lr needs a predictor"),
        ({"data.dataset": "folder"}, "needs data_dir"),
        ({"data.image_size": 4}, "image_size must be at least 8"),
        ({"augment.crop_scale": (0.5, 0.2)}, "crop_scale must satisfy"),
        ({"augment.blur_prob": 1.5}, "blur_prob must be a probability"),
        ({"runtime.strategy": "tpu"}, "needs the TPU address"),
        ({"runtime.precision": "float64"}, "precision must be one of"),
    ],
)
def test_invalid_settings_name_the_problem(changes, message):
    bad = config.replace(config.PretrainConfig(), **changes)
    with pytest.raises(ValueError, match=message):
        bad.validate()


def test_replace_reaches_nested_sections_and_keeps_frozen():
    base = config.PretrainConfig()
    changed = config.replace(base, epochs=3, **{"data.image_size": 16, "model.dim": 64})
    assert (changed.epochs, changed.data.image_size, changed.model.dim) == (3, 16, 64)
    assert base.data.image_size != 16 or base.model.dim != 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.epochs = 5


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"base_lr": NAN}, "base_lr"),
        ({"base_lr": INF}, "base_lr"),
        ({"weight_decay": NAN}, "weight_decay"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"momentum": NAN}, "momentum"),
        ({"warmup_epochs": NAN}, "warmup_epochs"),
        ({"warmup_epochs": INF}, "warmup_epochs"),
        ({"model.width_multiplier": NAN}, "width_multiplier"),
        ({"model.width_multiplier": INF}, "width_multiplier"),
        ({"model.width_multiplier": 0.0}, "width_multiplier"),
        ({"augment.jitter_strength": (0.4, NAN, 0.4, 0.1)}, "jitter_strength"),
        ({"augment.jitter_strength": (0.4, 0.4, INF, 0.1)}, "jitter_strength"),
        ({"augment.jitter_strength": (-0.1, 0.4, 0.4, 0.1)}, "jitter_strength"),
        ({"augment.jitter_strength": (0.4, 0.4, 0.4, 0.6)}, "jitter_strength hue"),
        ({"augment.jitter_strength": (0.4, 0.4, 0.4)}, "jitter_strength"),
        ({"augment.crop_scale": (NAN, 1.0)}, "crop_scale"),
        ({"augment.jitter_prob": NAN}, "jitter_prob"),
        ({"knn_k": 0}, "knn_k"),
        ({"knn_k": -3}, "knn_k"),
        ({"knn_temperature": 0.0}, "knn_temperature"),
        ({"knn_temperature": NAN}, "knn_temperature"),
        ({"probe_epochs": 0}, "probe_epochs"),
        ({"collapse_patience": 0}, "collapse_patience"),
        ({"collapse_threshold": NAN}, "collapse_threshold"),
        ({"collapse_threshold": 1.5}, "collapse_threshold"),
        ({"collapse_threshold": -0.1}, "collapse_threshold"),
        ({"batch_size": 64, "data.num_train_examples": 32}, "batch_size 64 is larger than the training set"),
        ({"runtime.seed": -1}, "seed"),
    ],
)
def test_pretrain_numbers_must_be_finite_and_in_range(changes, flag):
    bad = config.replace(config.PretrainConfig(), **changes)
    with pytest.raises(ValueError, match=f"^{flag}"):
        bad.validate()


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"base_lr": NAN}, "base_lr"),
        ({"base_lr": -0.1}, "base_lr"),
        ({"weight_decay": INF}, "weight_decay"),
        ({"momentum": 1.0}, "momentum"),
        ({"crop_scale": (0.08, NAN)}, "crop_scale"),
        ({"model.width_multiplier": NAN}, "width_multiplier"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_linear_numbers_must_be_finite_and_in_range(changes, flag):
    bad = config.replace(config.LinearConfig(init_from="/somewhere/run"), **changes)
    with pytest.raises(ValueError, match=f"^{flag}"):
        bad.validate()


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"learning_rate": NAN}, "learning_rate"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"weight_decay": NAN}, "weight_decay"),
        ({"margin": INF}, "margin"),
        ({"margin": NAN}, "margin"),
        ({"eval_fraction": NAN}, "eval_fraction"),
        ({"crop_fraction": NAN}, "crop_fraction"),
        ({"model.width_multiplier": INF}, "width_multiplier"),
    ],
)
def test_verify_numbers_must_be_finite_and_in_range(changes, flag):
    bad = config.replace(config.VerifyConfig(), **changes)
    with pytest.raises(ValueError, match=f"^{flag}"):
        bad.validate()


def test_export_rejects_an_empty_output_dir():
    with pytest.raises(ValueError, match="^output_dir is empty"):
        config.ExportConfig(output_dir="").validate()


def test_check_number_states_the_range():
    with pytest.raises(ValueError, match=r"x must be a finite number in \[0, 1\), got 1.0"):
        config.check_number("x", 1.0, low=0, high=1, high_open=True)
    assert config.check_number("x", 0.0, low=0, high=1, high_open=True) == 0.0
