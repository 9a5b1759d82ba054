"""bench/fault_campaign.py: its checks (bench/fault_checks.py) catch what they must, and a small campaign passes."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import fault_checks as fc  # noqa: E402


def _checkpoint(run_dir, step, value):
    prefix = os.path.join(run_dir, "checkpoints", f"ckpt-{step}")
    return tf.train.Checkpoint(v=tf.Variable(np.full(4, value, np.float32))).write(prefix)


def test_the_checks_catch_a_non_finite_checkpoint_and_half_written_files(tmp_path):
    run_dir = str(tmp_path)
    _checkpoint(run_dir, 1, 1.0)
    fc.check_files(run_dir)  # a finite checkpoint and nothing else: fine
    _checkpoint(run_dir, 2, np.nan)
    with pytest.raises(fc.Failure, match="ckpt-2 holds NaN/inf"):
        fc.check_files(run_dir)
    os.remove(os.path.join(run_dir, "checkpoints", "ckpt-2.index"))
    (tmp_path / "metrics.json").write_text('{"step": 1')
    with pytest.raises(fc.Failure, match="metrics.json is not whole"):
        fc.check_files(run_dir)
    (tmp_path / "metrics.json").write_text('{"step": 1}\n')
    (tmp_path / "flags.cfg").write_text("--seed=1\n--model_di")
    with pytest.raises(fc.Failure, match="flags.cfg is not whole"):
        fc.check_files(run_dir)
    (tmp_path / "flags.cfg").write_text("--seed=1\n")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.keras").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(fc.Failure, match="model.keras is not whole"):
        fc.check_files(run_dir)


def test_damage_leaves_an_older_checkpoint_to_fall_back_to(tmp_path):
    import random

    run_dir = str(tmp_path)
    _checkpoint(run_dir, 2, 1.0)
    assert fc.damage(run_dir, "truncate", random.Random(0)) is None  # the only checkpoint is left alone
    _checkpoint(run_dir, 4, 2.0)
    for kind in ("truncate", "bit_flip", "delete_index"):
        assert fc.damage(run_dir, kind, random.Random(3)) in (4, None)
        assert os.path.basename(fc.readable_prefixes(run_dir)[-1]) == "ckpt-2"


@pytest.mark.slow
def test_a_small_campaign_on_pretraining_passes_and_prints_its_table(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/fault_campaign.py", "--faults", "2", "--seed", "2", "--jobs", "pretrain"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "| fault " in "\n".join(lines) and "| sigkill " in "\n".join(lines)
    assert "0 failures" in result.stdout
    (total,) = [line for line in lines if line.startswith("| all ")]
    injected = int(total.split("|")[2])
    survived = int(total.split("|")[3])
    assert survived == injected
