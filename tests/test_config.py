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
        ({"base_lr": 0.0}, "base_lr must be positive"),
        ({"momentum": 1.0}, "momentum must be in"),
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
