"""Every flagfile in flags/ parses and validates with the tool it names."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_there_are_flagfiles():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"demo.cfg", "cifar10_resnet18.cfg", "imagenet_resnet50.cfg"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_parses_and_validates(path):
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            assert not line or line.startswith("#") or re.match(r"^--\w+=\S*$", line), (
                f"{os.path.basename(path)}:{number}: one --name=value per line, comments on their own lines: {line!r}"
            )
    module = TOOLS[tool_of(path)]
    result = subprocess.run(
        [sys.executable, "-m", module, f"--flagfile={path}", "--dry_run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--model_dir=" in result.stdout


def test_unknown_flag_in_a_flagfile_fails(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("--not_a_flag=3\n")
    result = subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.pretrain", f"--flagfile={bad}", "--dry_run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "not_a_flag" in result.stderr


def test_invalid_combination_fails_fast_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.pretrain", "--use_predictor=false", "--fix_pred_lr", "--dry_run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: fix_pred_lr needs a predictor: drop use_predictor=False"
