"""Config dataclass <-> flag values <-> flags.cfg (simsiam_tf.config.flags), and every recipe in flags/:
it parses and validates with the tool it names, and the flags.cfg the tool writes gives back its config."""

import glob
import os
import re
import subprocess
import sys

import pytest

from simsiam_tf import config as config_lib
from simsiam_tf.config import flags as config_flags
from simsiam_tf.errors import RunError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))
TOOLS = {
    "simsiam-pretrain": "simsiam_tf.cli.pretrain",
    "simsiam-linear": "simsiam_tf.cli.linear",
    "simsiam-verify": "simsiam_tf.cli.verify",
    "simsiam-export": "simsiam_tf.cli.export",
}


def tool_of(path):
    with open(path) as f:
        first = f.readline()
    match = re.match(r"#\s*tool:\s*(\S+)", first)
    assert match, f"{path} must start with '# tool: <console script>'"
    return match.group(1)


def dry_run(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *args, "--dry_run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_flag_values_fill_nested_fields_by_name():
    config = config_flags.config_from_flag_values(
        config_lib.PretrainConfig,
        {
            "image_size": 16,
            "width_multiplier": 0.5,
            "crop_scale": ["0.3", "0.9"],
            "jitter_strength": ["0.1"] * 4,
            "init_from": "",
            "tpu": None,
            "epochs": 3,
            "dry_run": True,
        },
    )
    assert config.data.image_size == 16 and config.model.width_multiplier == 0.5
    assert config.augment.crop_scale == (0.3, 0.9) and config.augment.jitter_strength == (0.1, 0.1, 0.1, 0.1)
    assert config.init_from is None and config.runtime.tpu is None and config.epochs == 3
    # Fields without a flag keep the dataclass default.
    assert config.base_lr == config_lib.PretrainConfig().base_lr


def test_flag_values_of_the_wrong_length_or_kind_name_the_flag():
    with pytest.raises(ValueError, match="--crop_scale must be 2 comma-separated numbers, got 1"):
        config_flags.config_from_flag_values(config_lib.PretrainConfig, {"crop_scale": ["0.2"]})
    with pytest.raises(ValueError, match="--jitter_strength must be 4 comma-separated numbers, got a,b,c,d"):
        config_flags.config_from_flag_values(config_lib.PretrainConfig, {"jitter_strength": list("abcd")})


def test_flags_file_text_gives_the_config(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text(
        "# tool: simsiam-linear\n# a comment\n--init_from=outputs/x\n--noaugment\n--crop_scale=0.1,0.5\n"
        "--cache_features\n--num_train_examples=None\n--width_multiplier=0.125\n--not_a_linear_flag=1\n"
    )
    values = config_flags.read_flags_file(str(path))
    assert values["#tool"] == "simsiam-linear" and values["cache_features"] == "true"
    assert config_flags.detect_kind(values) == "linear"
    config = config_flags.config_from_flags(config_lib.LinearConfig, values)
    assert config.init_from == "outputs/x" and config.augment is False and config.cache_features is True
    assert config.crop_scale == (0.1, 0.5) and config.data.num_train_examples is None
    assert config.model.width_multiplier == 0.125


def test_a_setting_spelled_auto_on_the_command_line_is_none_in_the_config(tmp_path):
    # simsiam-export's --kind=auto: read the kind from the run's flags.cfg.
    assert config_flags.config_from_flag_values(config_lib.ExportConfig, {"kind": "auto"}).kind is None
    assert config_flags.config_from_flag_values(config_lib.ExportConfig, {"kind": "verify"}).kind == "verify"
    assert config_flags.config_from_flags(config_lib.ExportConfig, {"kind": "auto"}).kind is None


def test_a_flag_of_a_setting_the_tool_does_not_expose_is_not_read():
    # simsiam-linear exposes only the encoder settings of ModelConfig: --dim belongs to pretraining.
    assert "dim" not in config_flags.flag_fields(config_lib.LinearConfig)
    linear = config_flags.config_from_flags(config_lib.LinearConfig, {"dim": "64", "backbone": "resnet34"})
    assert linear.model.dim == config_lib.ModelConfig().dim and linear.model.backbone == "resnet34"
    assert config_flags.detect_kind({"dim": "64", "backbone": "resnet34"}) == "pretrain"


def test_bad_lines_and_values_are_run_errors(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text("--seed=1\nseed=2\n")
    with pytest.raises(RunError, match=r"flags.cfg:2: expected --name=value"):
        config_flags.read_flags_file(str(path))
    with pytest.raises(RunError, match="--epochs=many is not a valid int"):
        config_flags.config_from_flags(config_lib.PretrainConfig, {"epochs": "many"})


def test_a_run_s_flags_are_found_from_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "flags.cfg").write_text("--backbone=resnet34\n")
    for path in (run, run / "checkpoints", run / "checkpoints" / "ckpt-7"):
        assert config_flags.find_run_flags(str(path)) == str(run / "flags.cfg")
    assert config_flags.find_run_flags(str(tmp_path / "elsewhere")) is None
    assert config_flags.find_run_flags(None) is None


def test_there_are_flagfiles():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"demo.cfg", "cifar10_resnet18.cfg", "imagenet_resnet50.cfg"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses_validates_and_round_trips(path, tmp_path):
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            assert not line or line.startswith("#") or re.match(r"^--\w+=\S*$", line), (
                f"{os.path.basename(path)}:{number}: one --name=value per line, comments on their own lines: {line!r}"
            )
    tool = tool_of(path)
    result = dry_run(TOOLS[tool], f"--flagfile={path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--model_dir=" in result.stdout
    # The resolved flags the tool prints (its flags.cfg) give back the recipe's config.
    config_cls = config_flags.CONFIGS[tool[len("simsiam-") :]]
    written = tmp_path / "flags.cfg"
    written.write_text(result.stdout)
    resolved = config_flags.config_from_flags(config_cls, config_flags.read_flags_file(str(written)))
    recipe = config_flags.config_from_flags(config_cls, config_flags.read_flags_file(path))
    assert resolved == recipe


def test_unknown_flag_in_a_flagfile_fails(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("--not_a_flag=3\n")
    result = dry_run("simsiam_tf.cli.pretrain", f"--flagfile={bad}")
    assert result.returncode != 0
    assert "not_a_flag" in result.stderr


def test_invalid_combination_fails_fast_with_one_line():
    result = dry_run("simsiam_tf.cli.pretrain", "--use_predictor=false", "--fix_pred_lr")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: fix_pred_lr needs a predictor: drop use_predictor=False"


@pytest.mark.parametrize(
    "config",
    [
        config_lib.replace(
            config_lib.PretrainConfig(),
            **{"model.projector_bn": "hidden", "augment.crop_scale": (0.3, 0.9), "model.heads_bn": True},
            train_steps=7,
            weight_decay=5e-05,
            init_from="runs/x",
        ),
        config_lib.LinearConfig(init_from="runs/x", augment=False, label_fraction=0.01, crop_scale=(0.5, 1.0)),
        config_lib.replace(config_lib.VerifyConfig(), **{"model.sync_bn": "true"}, head="triplet", margin=0.25),
    ],
    ids=["pretrain", "linear", "verify"],
)
def test_flags_text_of_a_config_reads_back_as_the_same_config(config, tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text(config_flags.flags_text(config))
    values = config_flags.read_flags_file(str(path))
    assert config_flags.detect_kind(values) == values["#tool"][len("simsiam-") :]
    assert config_flags.config_from_flags(type(config), values) == config
    assert "--weight_decay=5e-05" in path.read_text() or not isinstance(config, config_lib.PretrainConfig)
