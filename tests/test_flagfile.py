"""Config dataclass <-> flag values <-> flags.cfg (simsiam_tf.flagfile)."""

import os
import subprocess
import sys

import pytest

from simsiam_tf import config as config_lib
from simsiam_tf import flagfile
from simsiam_tf.errors import RunError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flag_values_fill_nested_fields_by_name():
    config = flagfile.config_from_flag_values(
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
        flagfile.config_from_flag_values(config_lib.PretrainConfig, {"crop_scale": ["0.2"]})
    with pytest.raises(ValueError, match="--jitter_strength must be 4 comma-separated numbers, got a,b,c,d"):
        flagfile.config_from_flag_values(config_lib.PretrainConfig, {"jitter_strength": list("abcd")})


def test_flags_file_text_gives_the_config(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text(
        "# tool: simsiam-linear\n# a comment\n--init_from=outputs/x\n--noaugment\n--crop_scale=0.1,0.5\n"
        "--cache_features\n--num_train_examples=None\n--width_multiplier=0.125\n--not_a_linear_flag=1\n"
    )
    values = flagfile.read_flags_file(str(path))
    assert values["#tool"] == "simsiam-linear" and values["cache_features"] == "true"
    assert flagfile.detect_kind(values) == "linear"
    config = flagfile.config_from_flags(config_lib.LinearConfig, values)
    assert config.init_from == "outputs/x" and config.augment is False and config.cache_features is True
    assert config.crop_scale == (0.1, 0.5) and config.data.num_train_examples is None
    assert config.model.width_multiplier == 0.125


def test_bad_lines_and_values_are_run_errors(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text("--seed=1\nseed=2\n")
    with pytest.raises(RunError, match=r"flags.cfg:2: expected --name=value"):
        flagfile.read_flags_file(str(path))
    with pytest.raises(RunError, match="--epochs=many is not a valid int"):
        flagfile.config_from_flags(config_lib.PretrainConfig, {"epochs": "many"})


def test_a_run_s_flags_are_found_from_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "flags.cfg").write_text("--backbone=resnet34\n")
    for path in (run, run / "checkpoints", run / "checkpoints" / "ckpt-7"):
        assert flagfile.find_run_flags(str(path)) == str(run / "flags.cfg")
    assert flagfile.find_run_flags(str(tmp_path / "elsewhere")) is None
    assert flagfile.find_run_flags(None) is None


@pytest.mark.parametrize("recipe", ["demo.cfg", "cifar10_resnet18.cfg", "simtriplet_tiles.cfg"])
def test_the_flags_cfg_a_tool_writes_gives_back_the_recipe_s_config(recipe, tmp_path):
    path = os.path.join(ROOT, "flags", recipe)
    result = subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.pretrain", f"--flagfile={path}", "--dry_run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = tmp_path / "flags.cfg"
    written.write_text(result.stdout)
    resolved = flagfile.config_from_flags(config_lib.PretrainConfig, flagfile.read_flags_file(str(written)))
    recipe_config = flagfile.config_from_flags(config_lib.PretrainConfig, flagfile.read_flags_file(path))
    assert resolved == recipe_config


def test_flags_text_of_a_config_reads_back_as_the_same_config(tmp_path):
    original = config_lib.replace(
        config_lib.PretrainConfig(),
        **{"data.dataset": "folder", "data.data_dir": "/images", "data.holdout_fraction": 0.2, "epochs": 7},
        **{"augment.crop_scale": (0.5, 1.0), "evaluate": False, "init_from": None},
    )
    path = tmp_path / "flags.cfg"
    path.write_text(flagfile.flags_text(original))
    assert flagfile.config_from_flags(config_lib.PretrainConfig, flagfile.read_flags_file(str(path))) == original
    assert "--init_from" not in path.read_text() and "--evaluate=false" in path.read_text()
