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


# Every job's config, valid as given: the base the checks below change one setting of.
VALID = {
    "pretrain": config.PretrainConfig(),
    "linear": config.LinearConfig(init_from="/somewhere/run"),
    "verify": config.VerifyConfig(),
    "export": config.ExportConfig(),
    "data_worker": config.DataWorkerConfig(dispatcher=True),
}


def _defined_settings():
    """(job, dotted field path, Setting) of every setting of every job, sections included."""
    from simsiam_tf.config import fields

    out = []
    for job, base in VALID.items():
        for field in dataclasses.fields(base):
            value = getattr(base, field.name)
            if dataclasses.is_dataclass(value):
                for inner in dataclasses.fields(value):
                    out.append((job, f"{field.name}.{inner.name}", inner.metadata[fields.SETTING]))
            else:
                out.append((job, field.name, field.metadata[fields.SETTING]))
    return out


SETTINGS = _defined_settings()


def test_every_field_of_every_job_is_a_defined_setting_with_help():
    assert len(SETTINGS) > 150
    for job, path, definition in SETTINGS:
        assert definition.help.strip().endswith((".", ")")), (job, path, definition.help)


@pytest.mark.parametrize(
    "job, path, choices",
    [(j, p, d.choices) for j, p, d in SETTINGS if d.choices and isinstance(d.choices[0], str)],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_value_not_among_a_setting_s_choices_is_refused_naming_them(job, path, choices):
    bad = config.replace(VALID[job], **{path: "bogus"})
    name = path.rpartition(".")[2]
    with pytest.raises(ValueError) as info:
        bad.validate()
    assert str(info.value) == f"{name} must be one of {', '.join(choices)}; got 'bogus'"


@pytest.mark.parametrize(
    "job, path, low, high",
    [(j, p, d.low, d.high) for j, p, d in SETTINGS if d.low is not None or d.high is not None],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_value_out_of_a_setting_s_range_is_refused_naming_it_and_the_value(job, path, low, high):
    name = path.rpartition(".")[2]
    default = VALID[job]
    for part in path.split("."):
        default = getattr(default, part)
    kind = float if isinstance(default, float) else int
    for value in ([kind(low - 1)] if low is not None else []) + ([kind(high + 1)] if high is not None else []):
        bad = config.replace(VALID[job], **{path: value})
        with pytest.raises(ValueError, match=f"^{name} must .*, got {value}$"):
            bad.validate()


@pytest.mark.parametrize(
    "cls, changes, message",
    [
        (
            config.ModelConfig,
            {"projector_layers": 4},
            "projector_layers must be 2 (CIFAR recipe) or 3 (ImageNet recipe), got 4",
        ),
        (config.RuntimeConfig, {"verbose": 3}, "verbose must be auto, 0, 1 or 2, got 3"),
        (
            config.ModelConfig,
            {"projector_hidden_dim": -1},
            "projector_hidden_dim must be >= 0 (0: the backbone's feature width), got -1",
        ),
        (config.PretrainConfig, {"knn_k": 0}, "knn_k must be at least 1 (neighbours of the kNN vote), got 0"),
        (config.PretrainConfig, {"batch_size": 1}, "batch_size must be at least 2 (BatchNorm needs a batch), got 1"),
        (config.AugmentConfig, {"blur_prob": 1.5}, "blur_prob must be a probability in [0, 1], got 1.5"),
        (config.DataWorkerConfig, {"dispatcher": True, "port": 70000}, "port must be in [0, 65535], got 70000"),
        (config.VerifyConfig, {"crop_fraction": 0.0}, "crop_fraction must lie in (0, 1], got 0.0"),
        (
            config.ModelConfig,
            {"backbone": "vgg16"},
            "unknown backbone 'vgg16'; choose one of resnet18, resnet18_cifar, resnet34, resnet34_cifar, resnet50, "
            "resnet50_cifar, small_resnet, small_vgg, keras:NAME for a Keras Applications model (e.g. "
            "keras:EfficientNetV2B0), or a name registered with simsiam_tf.register_backbone (or an entry point of "
            "the group simsiam_tf.backbones)",
        ),
    ],
)
def test_derived_checks_say_the_rule_in_words(cls, changes, message):
    with pytest.raises(ValueError) as info:
        config.replace(cls(), **changes).validate()
    assert str(info.value) == message


def test_model_flags_are_the_settings_that_define_variables():
    from simsiam_tf.config import flags

    pretrain = flags.model_flags(config.PretrainConfig)
    assert {"projector_hidden_dim", "projector_bn", "predictor_bn"} <= set(pretrain)
    assert {"backbone", "width_multiplier", "dim", "pred_dim", "projector_layers", "use_predictor", "heads_bn"} <= set(
        pretrain
    )
    assert "method" in pretrain and "stop_gradient" not in pretrain and "sync_bn" not in pretrain
    assert set(flags.model_flags(config.LinearConfig)) == {"backbone", "width_multiplier", "input_colour"}
    assert set(flags.model_flags(config.VerifyConfig)) == {
        "backbone",
        "width_multiplier",
        "input_colour",
        "head",
        "embedding_dim",
        "hidden_dim",
    }
    assert flags.model_flags(config.ExportConfig) == ()


def test_backbone_names_are_those_the_backbone_builder_accepts():
    from simsiam_tf.models import backbones

    assert backbones.BACKBONE_NAMES == config.BACKBONE_NAMES
    for name in config.BACKBONE_NAMES:
        assert backbones.parse_backbone_name(name)[0] in config.BACKBONE_ARCHS + config.SMALL_BACKBONES
