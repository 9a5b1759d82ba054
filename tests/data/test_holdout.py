"""A folder without train/ and test/ is never evaluated on its training images; a flat folder skips evaluation."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_pretrain_run
from PIL import Image

from simsiam_tf.data import holdout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES, PER_CLASS, FRACTION = 4, 60, 0.25


def write_noise_folder(root, per_class=PER_CLASS, num_classes=NUM_CLASSES, seed=0, size=16):
    """Class folders of uniform-noise images: a class says nothing about its images (random labels)."""
    rng = np.random.default_rng(seed)
    files = []
    for c in range(num_classes):
        os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)
        for i in range(per_class):
            name = os.path.join(f"class{c}", f"img{i:03d}.png")
            Image.fromarray(rng.integers(0, 256, [size, size, 3], dtype=np.uint8)).save(os.path.join(root, name))
            files.append(name)
    return sorted(files)


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("noise"))
    files = write_noise_folder(folder)
    run_dir = tiny_pretrain_run(
        tmp_path_factory,
        run={"evaluate": True, "knn_k": 1, "probe_epochs": 2},
        write_flags=True,
        dataset="folder",
        data_dir=folder,
        image_size=16,
        holdout_fraction=FRACTION,
    )
    return folder, files, run_dir


def test_draw_holdout_is_stratified_seeded_and_hashes_the_sorted_held_out_files():
    files = sorted(f"c{c}/{i:02d}.png" for c in range(3) for i in range(10 + 5 * c))
    labels = np.array([int(f[1]) for f in files])
    drawn = holdout.draw_holdout(files, labels, 0.2, seed=3)
    # floor(0.2 * n + 0.5) per class: 10 -> 2, 15 -> 3, 20 -> 4
    assert [int(drawn.held_out[labels == c].sum()) for c in range(3)] == [2, 3, 4]
    again = holdout.draw_holdout(files, labels, 0.2, seed=3)
    assert np.array_equal(drawn.held_out, again.held_out)
    assert not np.array_equal(drawn.held_out, holdout.draw_holdout(files, labels, 0.2, seed=4).held_out)
    names = "\n".join(sorted(f for f, h in zip(files, drawn.held_out) if h))
    assert drawn.files_sha256 == hashlib.sha256(names.encode()).hexdigest()
    # a class of one image keeps it for training
    assert holdout.held_out_count(1, 0.5) == 0 and holdout.held_out_count(2, 0.9) == 1


def test_pretraining_never_sees_the_held_out_images_and_knn_on_them_is_at_chance(noise_run):
    from simsiam_tf import builders, config
    from simsiam_tf.config import flags as config_flags
    from simsiam_tf.evaluation import monitor
    from simsiam_tf.runs.embed import RunEncoder

    folder, files, run_dir = noise_run
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    record = metrics["holdout"]
    assert record["num_held_out"] == NUM_CLASSES * int(np.floor(FRACTION * PER_CLASS + 0.5))
    assert record["counts_per_class"] == {f"class{c}": 15 for c in range(NUM_CLASSES)}

    flags_text = open(os.path.join(run_dir, "flags.cfg")).read()
    assert f"--holdout_fraction={FRACTION}" in flags_text
    assert holdout.recorded_sha256(flags_text) == record["files_sha256"]

    run_config = config_flags.config_from_flags(
        config.PretrainConfig, config_flags.read_flags_file(run_dir + "/flags.cfg")
    )
    train = builders.load_train_source(run_config)
    evaluation = builders.load_eval_source(run_config)

    def names(source):
        return sorted(os.path.relpath(p.decode(), folder) for p in np.asarray(source.records[0]))

    train_files, held_files = names(train), names(evaluation)
    assert not set(train_files) & set(held_files)
    assert sorted(train_files + held_files) == files
    assert hashlib.sha256("\n".join(held_files).encode()).hexdigest() == record["files_sha256"]

    # The oracle: 1-NN on the training images themselves is perfect even with random labels ...
    encoder = RunEncoder(run_dir)
    x, y = map(np.concatenate, zip(*encoder.batches(train, 64)))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.mean(monitor.knn_predict(x, y, x, NUM_CLASSES, k=1, temperature=0.1) == y) == 1.0
    # ... while the job's kNN figure, on the held-out images, is at chance (0.25; 60 images: sd 0.056).
    assert metrics["knn_top1"] < 0.5
    assert metrics["random_init_knn_top1"] < 0.5


def test_linear_probe_reuses_the_runs_hold_out_and_refuses_a_changed_folder(noise_run, tmp_path):
    from simsiam_tf import config
    from simsiam_tf.errors import RunError
    from simsiam_tf.runs import linear

    folder, _, run_dir = noise_run
    data = config.DataConfig(dataset="folder", data_dir=folder, image_size=16, holdout_fraction=FRACTION)
    probe = config.LinearConfig(
        runtime=config.RuntimeConfig(model_dir=str(tmp_path / "linear"), verbose=0),
        data=data,
        model=config.ModelConfig(width_multiplier=0.125),
        init_from=run_dir,
        epochs=2,
        compare_baselines=False,
    )
    metrics = linear.run(probe)
    recorded = json.load(open(os.path.join(run_dir, "metrics.json")))["holdout"]
    assert metrics["holdout"]["files_sha256"] == recorded["files_sha256"]
    assert metrics["num_train_examples"] == recorded["num_train"]

    # Another hold-out seed would score images the encoder trained on: an error naming the fix.
    changed = config.replace(probe, **{"data.holdout_seed": 1, "runtime.model_dir": str(tmp_path / "linear2")})
    with pytest.raises(RunError, match="held-out images differ"):
        linear.run(changed)


def test_a_flat_folder_pretrains_and_skips_evaluation_with_the_reason(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(1)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, [16, 16, 3], dtype=np.uint8)).save(flat / f"{i:03d}.png")
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simsiam_tf.cli.pretrain",
            "--flagfile=flags/small_images.cfg",
            "--dataset=folder",
            f"--data_dir={flat}",
            f"--model_dir={model_dir}",
            "--evaluate=true",
            "--train_steps=2",
            "--batch_size=16",
            "--width_multiplier=0.125",
            "--dim=32",
            "--pred_dim=16",
            "--export=false",
            "--verbose=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("evaluation skipped:")]
    assert len(skipped) == 1 and "no labels" in skipped[0]
    metrics = json.load(open(model_dir / "metrics.json"))
    assert "no labels" in metrics["evaluation_skipped"] and "knn_top1" not in metrics
    assert metrics["step"] == 2


def test_embed_of_the_runs_own_data_is_its_held_out_part(noise_run, tmp_path):
    from simsiam_tf import config
    from simsiam_tf.runs import embed

    folder, files, run_dir = noise_run
    metrics = embed.run(
        config.EmbedConfig(
            runtime=config.RuntimeConfig(model_dir=str(tmp_path / "embed")),
            data=embed.run_data_config(run_dir),
            init_from=run_dir,
        )
    )
    recorded = json.load(open(os.path.join(run_dir, "metrics.json")))["holdout"]
    paths = np.load(tmp_path / "embed" / "embeddings.npz")["paths"].tolist()
    assert len(paths) == recorded["num_held_out"] and set(paths) < set(files)
    assert hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest() == recorded["files_sha256"]
    assert metrics["holdout"]["files_sha256"] == recorded["files_sha256"]


@pytest.mark.parametrize("fraction", [1.0, -0.1, float("nan")])
def test_holdout_fraction_out_of_range_is_an_error_naming_it(fraction):
    from simsiam_tf import config

    with pytest.raises(ValueError, match="holdout_fraction must be a finite number in"):
        config.DataConfig(holdout_fraction=fraction).validate()


def test_verification_with_init_from_uses_the_runs_hold_out(noise_run, tmp_path):
    from simsiam_tf import config
    from simsiam_tf.runs import verify

    folder, _, run_dir = noise_run
    recorded = json.load(open(os.path.join(run_dir, "metrics.json")))["holdout"]
    metrics = verify.run(
        config.VerifyConfig(
            runtime=config.RuntimeConfig(model_dir=str(tmp_path / "verify"), verbose=0),
            data=config.DataConfig(dataset="folder", data_dir=folder, image_size=16, holdout_fraction=FRACTION),
            model=config.ModelConfig(width_multiplier=0.125),
            init_from=run_dir,
            head="cosine",
            freeze_encoder=True,
            augment="none",
            closed_set=True,
            compare_pixels=False,
            epochs=1,
            steps_per_epoch=1,
            num_val_pairs=20,
            num_eval_pairs=20,
            num_trials=5,
        )
    )
    assert metrics["holdout"]["files_sha256"] == recorded["files_sha256"]


def test_resuming_with_another_hold_out_is_refused_before_anything_is_written(noise_run):
    from simsiam_tf import config
    from simsiam_tf.config import flags as config_flags
    from simsiam_tf.errors import RunError
    from simsiam_tf.runs import pretrain

    _, _, run_dir = noise_run
    flags_path = os.path.join(run_dir, "flags.cfg")
    before = open(flags_path).read()
    run_config = config_flags.config_from_flags(config.PretrainConfig, config_flags.read_flags_file(flags_path))
    with pytest.raises(RunError, match="held-out images differ"):
        pretrain.run(config.replace(run_config, **{"data.holdout_seed": 5, "epochs": 2}), flags_text="--epochs=2\n")
    assert open(flags_path).read() == before
