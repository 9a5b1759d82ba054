"""simsiam-verify end to end on tiny settings, and the job's figures against pair_metrics."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_pretrain_run

from simsiam_tf import builders, config, data, models
from simsiam_tf.data import pair_images
from simsiam_tf.errors import RunError
from simsiam_tf.evaluation import baselines, pair_metrics, verification
from simsiam_tf.runs import verify
from simsiam_tf.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_FLAGS = [
    "--image_size=16",
    "--num_train_examples=200",
    "--num_eval_examples=200",
    "--embedding_dim=16",
    "--hidden_dim=32",
    "--batch_size=8",
    "--epochs=2",
    "--steps_per_epoch=2",
    "--num_val_pairs=60",
    "--num_eval_pairs=80",
    "--num_trials=30",
    "--checkpoint_every_steps=2",
    "--log_every_steps=1",
    "--verbose=0",
]


def run_cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.verify", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


def event_tags(directory):
    tags = set()
    for root, _, files in os.walk(directory):
        for name in files:
            if name.startswith("events.out.tfevents"):
                for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                    event = tf.compat.v1.Event.FromString(record.numpy())
                    tags.update(v.tag for v in event.summary.value)
    return tags


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """A run directory as simsiam-pretrain leaves it: flags.cfg and a checkpoint of model=SimSiam."""
    run_dir = tmp_path_factory.mktemp("pretrain")
    model_config = config.ModelConfig(backbone="resnet18_cifar", width_multiplier=0.125, dim=16, pred_dim=8)
    strategy = tf.distribute.get_strategy()
    model = models.SimSiam(builders.build_encoder(model_config, strategy, seed=0), dim=16, pred_dim=8)
    # Weights unlike any fresh initialisation, so the test can tell they were loaded.
    for w in model.backbone.weights:
        w.assign(w + 0.01 * (1.0 + np.arange(np.prod(w.shape), dtype=np.float32).reshape(w.shape) % 7))
    checkpoints.RunCheckpoint(str(run_dir), model=model).save(5)
    (run_dir / "flags.cfg").write_text("--backbone=resnet18_cifar\n--width_multiplier=0.125\n--dim=16\n")
    return run_dir, [w.numpy() for w in model.backbone.weights]


@pytest.mark.slow
def test_cli_end_to_end_with_random_init_comparison(tmp_path, pretrain_run):
    pretrain_dir, pretrained_weights = pretrain_run
    model_dir = tmp_path / "verify"
    result = run_cli(
        f"--model_dir={model_dir}",
        f"--init_from={pretrain_dir}",
        "--compare_random_init",
        "--freeze_encoder",
        "--head=triplet",
        "--mining=batch_hard",
        "--margin=0.5",
        *TINY_FLAGS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "random init" in result.stdout and "roc_auc" in result.stdout

    # The encoder was rebuilt as the pretraining run's flags.cfg says.
    flags_text = (model_dir / "flags.cfg").read_text()
    assert "--backbone=resnet18_cifar" in flags_text and "--width_multiplier=0.125" in flags_text

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["head"] == "triplet" and metrics["step"] == 4 and metrics["open_set"]
    for prefix in ("", "random_init_"):
        for key in ("roc_auc", "eer", "accuracy", "one_shot_5way"):
            assert 0.0 <= metrics[prefix + key] <= 1.0, (prefix + key, metrics[prefix + key])
        # 80 evaluation pairs hold 40 negatives, too few to measure a false accept rate of 1e-2.
        assert metrics[prefix + "tar_at_far_1e-2"] is None
        assert np.isfinite(metrics[prefix + "threshold"])
        # The synthetic set has 10 classes, 5 of them for evaluation: no 20-way trial exists.
        assert metrics[prefix + "one_shot_20way"] is None
    assert any("one_shot_20way" in note for note in metrics["notes"])
    # The pixel-distance verifier scored the same plan, through the same metrics; the warnings compare with it.
    assert any(note.startswith("tar_at_far_1e-2 not measured") for note in metrics["notes"])
    for key in ("roc_auc", "eer", "accuracy", "one_shot_5way"):
        assert 0.0 <= metrics["pixels_" + key] <= 1.0, key
    assert metrics["warnings"] == baselines.baseline_warnings(metrics)
    assert any(line.startswith("raw pixels") for line in result.stdout.splitlines())

    for directory in (model_dir, model_dir / verify.RANDOM_INIT_SUBDIR):
        assert (directory / "roc.png").read_bytes()[:8] == PNG_SIGNATURE
        assert tf.train.latest_checkpoint(str(directory / "checkpoints")).endswith("ckpt-4")
    assert {"loss", "score_gap"} <= event_tags(model_dir / "logs" / "train")
    assert {"roc_auc", "eer", "accuracy", "one_shot_5way", "roc"} <= event_tags(model_dir / "logs" / "eval")

    # The job's figures are pair_metrics' figures on the scores it saved.
    saved = np.load(model_dir / "scores.npz")
    threshold, _ = pair_metrics.best_threshold(saved["val_labels"], saved["val_scores"])
    if np.isfinite(threshold):
        assert metrics["threshold"] == pytest.approx(threshold)
    labels, scores = saved["eval_labels"], saved["eval_scores"]
    assert labels.shape == (80,) and labels.sum() == 40
    assert metrics["roc_auc"] == pytest.approx(pair_metrics.roc_auc(labels, scores))
    assert metrics["eer"] == pytest.approx(pair_metrics.equal_error_rate(labels, scores)[0])
    assert metrics["accuracy"] == pytest.approx(
        pair_metrics.accuracy_at_threshold(labels, scores, metrics["threshold"])
    )
    assert np.isnan(pair_metrics.tar_at_far(labels, scores, 1e-2)) and metrics["tar_at_far_1e-2"] is None
    assert saved["one_shot_5way_scores"].shape == (30, 5)
    assert metrics["one_shot_5way"] == pytest.approx(pair_metrics.n_way_accuracy(saved["one_shot_5way_scores"]))

    # The saved verifier holds the chosen threshold and the pretrained (frozen) encoder,
    # and scores the evaluation pairs from their images as the job did from cached embeddings.
    verifier = keras.models.load_model(model_dir / "verifier.keras")
    assert float(verifier.threshold.numpy()) == pytest.approx(metrics["threshold"])
    for w, expected in zip(verifier.backbone.weights, pretrained_weights):
        np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    # The CLI ran on the default dataset (TINY_FLAGS name none).
    source = data.load_source(config.VerifyConfig().data.dataset, split="test", image_size=16, num_examples=200)
    table = pair_images.image_table(source)
    x1 = pair_images.load_images(table, saved["eval_first"][:12], 16)
    x2 = pair_images.load_images(table, saved["eval_second"][:12], 16)
    np.testing.assert_allclose(verifier.score(x1, x2).numpy(), scores[:12], atol=1e-4)


def test_invalid_flags_fail_fast_with_one_line():
    result = run_cli("--head=contrastive", "--distance=angular", "--dry_run")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: distance=angular applies to the triplet head; the contrastive head uses the euclidean distance (distance=l2)"
    )
    result = run_cli("--compare_random_init", "--dry_run")
    assert result.returncode == 2 and "set init_from" in result.stderr


def _tiny_config(model_dir, **changes):
    base = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "data.image_size": 16,
        "data.num_train_examples": 100,
        "data.num_eval_examples": 100,
        "embedding_dim": 8,
        "hidden_dim": 16,
        "batch_size": 4,
        "epochs": 1,
        "steps_per_epoch": 1,
        "num_val_pairs": 20,
        "num_eval_pairs": 20,
        "num_trials": 5,
    }
    base.update(changes)
    return config.replace(config.VerifyConfig(), **base)


def test_one_class_dataset_is_a_clear_error(tmp_path):
    folder = tmp_path / "images" / "only_class"
    folder.mkdir(parents=True)
    for i in range(4):
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(np.full((8, 8, 3), 40 * i, np.uint8)))
    cfg = _tiny_config(
        tmp_path / "run",
        **{"data.dataset": "folder", "data.data_dir": str(tmp_path / "images"), "data.eval_split": "train"},
    )
    with pytest.raises(RunError, match=r"1 class\(es\); pair verification needs at least 2"):
        verify.run(cfg)


def test_missing_init_from_names_what_to_do(tmp_path):
    cfg = _tiny_config(tmp_path / "run", init_from=str(tmp_path / "no_such_run"))
    with pytest.raises(RunError, match="run `simsiam-pretrain` first.*--init_from= for a random-init encoder"):
        verify.run(cfg)


def test_init_from_another_architecture_is_a_clear_error(tmp_path, pretrain_run):
    cfg = _tiny_config(tmp_path / "run", init_from=str(pretrain_run[0]), **{"model.width_multiplier": 0.25})
    with pytest.raises(RunError, match="does not fit this encoder.*--width_multiplier"):
        verify.run(cfg)


def test_figures_on_a_hand_made_case():
    # Validation: scores >= 0.6 are exactly the same pairs, so that is the threshold.
    val_labels = np.array([1, 1, 0, 0, 1, 0])
    val_scores = np.array([0.9, 0.6, 0.5, 0.1, 0.7, 0.3])
    # Evaluation: one same pair (0.55) falls under the threshold, one different pair ties the best.
    eval_labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    eval_scores = np.array([0.95, 0.8, 0.55, 0.95, 0.2, 0.1, 0.4, 0.7])
    trials = {5: np.array([[0.9, 0.1, 0.2, 0.3, 0.4], [0.2, 0.5, 0.1, 0.1, 0.1]]), 20: None}
    m = verification.verification_metrics(val_labels, val_scores, eval_labels, eval_scores, trials)
    assert m["threshold"] == 0.6 and m["val_accuracy"] == 1.0
    assert m["accuracy"] == pytest.approx(6 / 8)
    # Of the 16 (same, different) pairs of pairs 12 are ranked right and one ties (counting half).
    assert m["roc_auc"] == pytest.approx(12.5 / 16)
    assert m["tar_at_far_1e-2"] is None  # 4 negatives cannot measure a false accept rate of 1e-2
    assert m["one_shot_5way"] == 0.5 and m["one_shot_20way"] is None
    assert m["eer"] == pytest.approx(pair_metrics.equal_error_rate(eval_labels, eval_scores)[0])
    # Rejecting every validation pair is best: the stored threshold stays finite and does the same.
    threshold, accuracy = verification.decision_threshold(np.array([0, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert np.isfinite(threshold) and threshold > 0.9 and accuracy == 0.75


def test_cosine_head_on_a_frozen_encoder_trains_nothing_and_scores_the_feature_cosine(tmp_path, tmp_path_factory):
    pretrain_dir = tiny_pretrain_run(tmp_path_factory, image_size=16, num_train_examples=64)
    cfg = _tiny_config(
        tmp_path / "run",
        init_from=pretrain_dir,
        head="cosine",
        freeze_encoder=True,
        compare_random_init=True,
        num_eval_pairs=40,
    )
    metrics = verify.run(cfg)
    assert metrics["head"] == "cosine" and metrics["step"] == 0 and metrics["total_steps"] == 0
    assert metrics["random_init_roc_auc"] is not None and metrics["pixels_roc_auc"] is not None

    # Oracle: the cosine similarity, in NumPy, of the pretrained encoder's features of each evaluation pair.
    encoder = builders.build_encoder(cfg.model, tf.distribute.get_strategy(), seed=1)
    checkpoints.load_weights(pretrain_dir, what="encoder", model=tf.train.Checkpoint(backbone=encoder))
    saved = np.load(tmp_path / "run" / "scores.npz")
    source = data.load_source(cfg.data.dataset, split="test", image_size=16, num_examples=100)
    table = pair_images.image_table(source)
    f1 = encoder(pair_images.load_images(table, saved["eval_first"], 16), training=False).numpy()
    f2 = encoder(pair_images.load_images(table, saved["eval_second"], 16), training=False).numpy()
    cosine = np.sum(f1 * f2, axis=1) / (np.linalg.norm(f1, axis=1) * np.linalg.norm(f2, axis=1))
    assert metrics["roc_auc"] == pytest.approx(pair_metrics.roc_auc(saved["eval_labels"], cosine), abs=1e-6)
    assert not (tmp_path / "run" / "history.json").exists()
