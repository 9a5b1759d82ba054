"""Starting a job in its run directory: the model flags checked first, the lock, flags.cfg only once started."""

import os

import pytest
from conftest import tiny_pretrain_run

from simsiam_tf import config as config_lib
from simsiam_tf.errors import RunError
from simsiam_tf.runs import lock, rundir

RECORDED = "--backbone=resnet18_cifar\n--width_multiplier=0.0625\n--dim=32\n--use_predictor=true\n--epochs=1\n"


def _pretrain(**changes):
    base = {"model.backbone": "resnet18_cifar", "model.width_multiplier": 0.0625, "model.dim": 32, "epochs": 1}
    base.update(changes)
    return config_lib.replace(config_lib.PretrainConfig(), **base)


def _snapshot(directory):
    """{relative path: bytes} of every file under `directory`, and the set of its sub-directories."""
    files, dirs = {}, set()
    for root, subdirs, names in os.walk(directory):
        dirs.update(os.path.relpath(os.path.join(root, d), directory) for d in subdirs)
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = f.read()
    return files, dirs


@pytest.fixture
def run_dir(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "flags.cfg").write_text(RECORDED)
    return directory


def test_a_restart_with_the_same_model_flags_passes_and_other_flags_may_change(run_dir):
    rundir.check_same_model(_pretrain(epochs=5, base_lr=0.1), str(run_dir))


def test_a_restart_with_another_width_names_the_flag_both_values_and_the_fix(run_dir):
    with pytest.raises(RunError) as info:
        rundir.check_same_model(_pretrain(**{"model.width_multiplier": 0.125}), str(run_dir))
    message = str(info.value)
    assert "\n" not in message
    assert "it has --width_multiplier=0.0625" in message and "this run asks for --width_multiplier=0.125" in message
    assert f"--flagfile={run_dir / 'flags.cfg'}" in message and "a new --model_dir" in message
    assert "--dim" not in message  # only the flags that differ


def test_every_differing_model_flag_is_named_booleans_included(run_dir):
    with pytest.raises(RunError) as info:
        rundir.check_same_model(_pretrain(**{"model.dim": 64, "model.use_predictor": False}), str(run_dir))
    assert "it has --dim=32 --use_predictor=true" in str(info.value)
    assert "asks for --dim=64 --use_predictor=false" in str(info.value)


def test_flags_the_file_does_not_record_and_a_missing_file_are_not_compared(run_dir, tmp_path):
    # flags.cfg says nothing of --pred_dim or --heads_bn: no default stands in for them
    rundir.check_same_model(_pretrain(**{"model.pred_dim": 7, "model.heads_bn": False}), str(run_dir))
    rundir.check_same_model(_pretrain(**{"model.width_multiplier": 2.0}), str(tmp_path / "new"))


def test_linear_and_verify_compare_their_own_model_flags(tmp_path):
    (tmp_path / "flags.cfg").write_text("--backbone=resnet18\n--width_multiplier=0.5\n--head=triplet\n--dim=99\n")
    linear = config_lib.replace(
        config_lib.LinearConfig(), **{"model.backbone": "resnet18", "model.width_multiplier": 0.5}
    )
    rundir.check_same_model(linear, str(tmp_path))
    verify = config_lib.replace(
        config_lib.VerifyConfig(),
        **{"model.backbone": "resnet18", "model.width_multiplier": 0.5, "head": "contrastive"},
    )
    with pytest.raises(RunError, match="it has --head=triplet"):
        rundir.check_same_model(verify, str(tmp_path))


def test_a_start_that_fails_leaves_no_directory_behind_not_even_its_parents(tmp_path):
    target = tmp_path / "outputs" / "deep" / "run"
    with pytest.raises(RunError, match="no data"), rundir.RunStart(str(target), "--x=1\n"):
        assert os.path.exists(target / lock.LOCK_FILE)
        raise RunError("no data")
    assert sorted(os.listdir(tmp_path)) == []


def test_a_start_that_fails_in_an_existing_run_leaves_every_file_as_it_was(run_dir):
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "ckpt-1.index").write_bytes(b"\x00index")
    before = _snapshot(run_dir)
    with pytest.raises(RunError), rundir.RunStart(str(run_dir), "--width_multiplier=9\n"):
        raise RunError("checkpoint does not fit")
    assert _snapshot(run_dir) == before


def test_a_failed_start_keeps_the_lock_file_of_earlier_runs_empty(run_dir):
    with rundir.RunStart(str(run_dir), None) as start:
        start.started()
    before = _snapshot(run_dir)
    assert before[0][lock.LOCK_FILE] == b""
    with pytest.raises(RunError), rundir.RunStart(str(run_dir), "--x=1\n"):
        raise RunError("bad")
    assert _snapshot(run_dir) == before


def test_flags_cfg_is_written_when_the_run_starts_and_stays_after_a_later_failure(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(RunError), rundir.RunStart(str(target), "--epochs=3\n") as start:
        assert not os.path.exists(target / "flags.cfg")
        start.started()
        assert (target / "flags.cfg").read_text() == "--epochs=3\n"
        raise RunError("diverged")
    assert (target / "flags.cfg").read_text() == "--epochs=3\n"
    assert [n for n in os.listdir(target) if n.startswith(".tmp")] == []


def test_a_second_start_on_a_held_directory_fails_naming_the_holder_and_writes_nothing(run_dir):
    with rundir.RunStart(str(run_dir), "--epochs=1\n") as first:
        first.started()
        before = _snapshot(run_dir)
        with pytest.raises(RunError, match=rf"in use by pid {os.getpid()} on host"):
            with rundir.RunStart(str(run_dir), "--epochs=99\n"):
                pass
        assert _snapshot(run_dir) == before


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny pretraining run with its flags.cfg (projector_hidden_dim 0, projector_bn all, predictor_bn hidden)."""
    return tiny_pretrain_run(tmp_path_factory, write_flags=True, image_size=16, num_train_examples=16)


@pytest.mark.parametrize(
    "field, value, recorded",
    [
        ("projector_hidden_dim", 24, "0"),
        ("projector_bn", "hidden", "all"),
        ("predictor_bn", "none", "hidden"),
        ("input_colour", "luma", "rgb"),
    ],
)
def test_a_restart_that_changes_the_heads_is_refused_before_anything_is_built(
    tiny_run, field, value, recorded, monkeypatch
):
    from simsiam_tf import builders
    from simsiam_tf.config import flags as config_flags
    from simsiam_tf.runs import pretrain

    def must_not_build(*args, **kwargs):
        raise AssertionError("the model was built before the flags were checked")

    monkeypatch.setattr(builders, "build_model", must_not_build)
    monkeypatch.setattr(builders, "build_encoder", must_not_build)
    ran = config_flags.config_from_flags(
        config_lib.PretrainConfig, config_flags.read_flags_file(os.path.join(tiny_run, "flags.cfg"))
    )
    assert str(getattr(ran.model, field)) == recorded
    before = _snapshot(tiny_run)
    with pytest.raises(RunError) as info:
        pretrain.run(config_lib.replace(ran, **{f"model.{field}": value}, epochs=2))
    message = str(info.value)
    assert f"it has --{field}={recorded}" in message and f"this run asks for --{field}={value}" in message
    assert "Nothing was written" in message
    assert _snapshot(tiny_run) == before
