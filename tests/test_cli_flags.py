"""What every tool does before any work: --help, absl's parse errors and invalid values (exit 2), and a
console kept free of TensorFlow's start-up and checkpoint chatter."""

import logging
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("pretrain", "linear", "verify", "export", "embed")


def run_tool(tool, *args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", f"simsiam_tf.cli.{tool}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env or dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
    )


def test_linear_help_shows_the_tool_and_its_grouped_flags():
    result = run_tool("linear", "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("simsiam-linear: linear evaluation of a pretrained encoder")
    assert "\nmodel:\n" in out and "\noptimisation:\n" in out and "\nrun:\n" in out and "\ndata:\n" in out
    assert "  --init_from  Required:" in out
    assert "  --base_lr=0.1  Base learning rate" in out
    assert "logtostderr" not in out and "--helpfull" in out
    # One line per flag: every line under a heading is a flag.
    flag_lines = [line for line in out.splitlines() if line.startswith("  --")]
    assert len(flag_lines) == len({line.split()[0].split("=")[0] for line in flag_lines}) > 20


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_its_own_help_and_keeps_helpfull(tool):
    short = run_tool(tool, "--help")
    assert short.returncode == 0, short.stderr
    assert short.stdout.startswith(f"simsiam-{tool}:")
    assert "  --model_dir=" in short.stdout and "logtostderr" not in short.stdout
    if tool == "export":
        full = run_tool(tool, "--helpfull")
        assert full.returncode == 0 and "logtostderr" in full.stdout and "--kind" in full.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr=0.1"], "error: Unknown command line flag 'lr'"),
        (["--flagfile=/nonexistent/run.cfg"], "error: Unable to open flagfile"),
        (["--base_lr=fast"], "error: flag --base_lr=fast"),
        (["--epochs=2.5"], "error: flag --epochs=2.5"),
    ],
)
def test_absl_parse_errors_exit_2_with_one_line(args, message):
    result = run_tool("pretrain", *args, "--dry_run")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


@pytest.mark.parametrize(
    "tool, args, flag",
    [
        ("pretrain", ["--base_lr=nan"], "base_lr"),
        ("pretrain", ["--jitter_strength=0.4,0.4,0.4,inf"], "jitter_strength"),
        ("pretrain", ["--knn_temperature=0"], "knn_temperature"),
        ("pretrain", ["--collapse_threshold=nan"], "collapse_threshold"),
        ("linear", ["--init_from=/nonexistent/run", "--weight_decay=inf"], "weight_decay"),
        ("verify", ["--learning_rate=nan"], "learning_rate"),
    ],
)
def test_invalid_values_exit_2_naming_the_flag_on_dry_run(tool, args, flag):
    result = run_tool(tool, *args, "--dry_run")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {flag} "), result.stderr


def test_a_cpu_start_prints_only_the_tools_own_lines(tmp_path):
    # No TF_CPP_MIN_LOG_LEVEL: the tool's defaults. TensorFlow loads, looks for devices, and the
    # tool fails on the empty run directory with its one line, without CUDA or oneDNN notices.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    result = run_tool("export", f"--model_dir={tmp_path}", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no checkpoint in {str(tmp_path)!r} (looked in {str(tmp_path / 'checkpoints')}): train the run "
        "first, or give the directory of a run that saved one"
    ]


def test_checkpoint_sharding_timings_stay_off_the_console(caplog):
    from absl import logging as absl_logging

    from simsiam_tf.cli import common

    logger = absl_logging.get_absl_logger()
    logger.addFilter(common._drop_checkpoint_chatter)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)  # whatever an earlier test in this process set
    try:
        with caplog.at_level(logging.INFO):
            absl_logging.info("Sharding callback duration: %s microseconds", 42)
            absl_logging.info("resuming from %s", "ckpt-4")
    finally:
        logger.removeFilter(common._drop_checkpoint_chatter)
        absl_logging.set_verbosity(verbosity)
    assert [r.getMessage() for r in caplog.records] == ["resuming from ckpt-4"]
