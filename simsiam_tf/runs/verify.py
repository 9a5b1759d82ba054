"""The pair-verification job: train a twin head, pick the threshold, report verification figures.

Writes into `model_dir`: checkpoints/ (verifier and optimizer, with the chosen
threshold), logs/ (TensorBoard: training curves and the final figures), history.json,
metrics.json, scores.npz (labels and scores of every evaluated pair and trial, so the
figures can be recomputed), roc.png and verifier.keras. With `compare_random_init` the
same head is also trained on a random-init encoder in `model_dir/random_init/`, and
metrics.json gets its figures as `random_init_*`.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import progress
from simsiam_tf.builders import build_encoder, build_verifier, build_verify_optimizer, holdout_spec
from simsiam_tf.data import image_files, label_budget, pair_images, pairs
from simsiam_tf.errors import RunError
from simsiam_tf.evaluation import baselines, pair_metrics
from simsiam_tf.evaluation.verification import (
    FIGURE_KEYS,
    N_WAYS,
    EvaluationPlan,
    embed_plan,
    score_embedded,
    tar_note,
    verification_metrics,
)
from simsiam_tf.runs import heldout, rundir
from simsiam_tf.training import checkpoints, preemption
from simsiam_tf.training.callbacks import LOG_SUBDIR, EpochHistory, NaNGuard, ScalarLogger, StepCheckpointer
from simsiam_tf.training.files import write_json_atomic
from simsiam_tf.training.finite import check_embeddings_alive
from simsiam_tf.training.loop import fit_from_step
from simsiam_tf.training.preemption import PreemptionCheckpointer

RANDOM_INIT_SUBDIR = "random_init"


def load_sources(config):
    """(train source, eval source or None when both splits are the same)."""
    d = config.data
    kwargs = dict(
        data_dir=d.data_dir,
        image_size=d.image_size,
        seed=config.runtime.seed,
        on_corrupt=d.on_corrupt,
        max_image_pixels=d.max_image_pixels,
    )
    try:
        train = pair_images.load_labelled_source(
            d.dataset,
            split=d.train_split,
            num_examples=d.num_train_examples,
            holdout=holdout_spec(d, d.train_split),
            **kwargs,
        )
        if d.eval_split == d.train_split:
            return train, None
        evaluation = pair_images.load_labelled_source(
            d.dataset,
            split=d.eval_split,
            num_examples=d.num_eval_examples,
            holdout=holdout_spec(d, d.eval_split),
            **kwargs,
        )
    except ValueError as err:
        raise RunError(str(err)) from None
    return train, evaluation


def make_pools(config, train_source, eval_source):
    try:
        return pairs.make_pools(
            train_source,
            eval_source,
            closed_set=config.closed_set,
            eval_fraction=config.eval_fraction,
            val_fraction=config.val_fraction,
            seed=config.runtime.seed,
        )
    except ValueError as err:
        raise RunError(str(err)) from None


def apply_label_budget(config, pools):
    """(pools, LabelBudget): the training pool cut to the config's label budget; (pools, None) without one.

    Only the training pool is cut: the validation images (threshold) and the evaluation
    images stay as they are, so the figures stay comparable across budgets.
    """
    if config.labels_per_class is None and config.label_fraction is None:
        return pools, None
    train = pools.train
    try:
        budget = label_budget.draw_label_budget(
            train.labels, config.labels_per_class, config.label_fraction, seed=config.runtime.seed
        )
        kept = pairs.check_pool(
            pairs.Pool(train.table, train.indices[budget.indices], "train"),
            " under the label budget; raise --labels_per_class or --label_fraction",
        )
    except ValueError as err:
        raise RunError(str(err)) from None
    logging.info("%s", budget.summary())
    return dataclasses.replace(pools, train=kept), budget


def make_plan(config, pools):
    """Seeded validation pairs, evaluation pairs and 5-/20-way trials (None where the classes are too few)."""
    seed = config.runtime.seed
    notes = []
    trials = {}
    for n in N_WAYS:
        try:
            trials[n] = pairs.make_n_way_trials(pools.evaluation, n, config.num_trials, seed=seed)
        except ValueError as err:
            trials[n] = None
            notes.append(f"one_shot_{n}way not measured: {err}")
            logging.warning("one_shot_%dway not measured: %s", n, err)
    evaluation = pairs.make_eval_pairs(pools.evaluation, config.num_eval_pairs, seed=seed)
    note = tar_note(evaluation.labels)
    if note:
        notes.append(note)
        logging.warning("%s", note)
    return EvaluationPlan(
        validation=pairs.make_eval_pairs(pools.validation, config.num_val_pairs, seed=seed + 1),
        evaluation=evaluation,
        trials=trials,
        notes=notes,
    )


def make_train_dataset(config, pool, start_step=0):
    """The run's training stream from `start_step`: pair batches, or triplet batches for the triplet head."""
    make = pairs.make_class_triplet_dataset if config.head == "triplet" else pairs.make_pair_dataset
    return make(
        pool,
        config.batch_size,
        config.data.image_size,
        seed=config.runtime.seed,
        start_step=start_step,
        augment=config.augment,
        crop_fraction=config.crop_fraction,
    )


# --------------------------------------------------------------------------- evaluation


def evaluate(verifier, pools, plan, config, check_alive=None):
    """(metrics, scores): figures of a verifier on the plan, with its threshold chosen on validation pairs.

    `check_alive` (a name for the message): first check that the verifier's embeddings of
    the evaluation images vary (`check_embeddings_alive`).
    """
    table, size = pools.evaluation.table, config.data.image_size
    indices, embeddings = embed_plan(verifier, table, plan, size, config.eval_batch_size, config.crop_fraction)
    if check_alive:
        check_embeddings_alive(embeddings, what=f"verifier ({check_alive})")
    scores = score_embedded(verifier, indices, embeddings, plan)
    trial_scores = {n: scores.get(f"one_shot_{n}way_scores") for n in N_WAYS}
    metrics = verification_metrics(
        plan.validation.labels, scores["val_scores"], plan.evaluation.labels, scores["eval_scores"], trial_scores
    )
    return metrics, scores


def write_scores(path, plan, scores):
    arrays = {
        "val_first": plan.validation.first,
        "val_second": plan.validation.second,
        "val_labels": plan.validation.labels,
        "eval_first": plan.evaluation.first,
        "eval_second": plan.evaluation.second,
        "eval_labels": plan.evaluation.labels,
    }
    for n, trial in plan.trials.items():
        if trial is not None:
            arrays[f"one_shot_{n}way_queries"], arrays[f"one_shot_{n}way_candidates"] = trial
    arrays.update(scores)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _log_figures(log_dir, step, metrics, roc_path):
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "eval"))
    with writer.as_default(step=step):
        for key in FIGURE_KEYS:
            if metrics.get(key) is not None:
                tf.summary.scalar(key, float(metrics[key]))
        png = tf.io.decode_png(tf.io.read_file(roc_path), channels=4)
        tf.summary.image("roc", png[tf.newaxis])
    writer.flush()


# --------------------------------------------------------------------------- training


def train_and_evaluate(config, strategy, pools, plan, model_dir, init_from, label, start=None, callbacks=()):
    """Trains the configured head in `model_dir` (resuming there), evaluates it, stores the threshold.

    Returns (metrics, verifier). `init_from` None: random-init encoder. `start()` (if
    given) is called once the restore (or the encoder's initialisation) succeeded,
    before anything is written. Raises `DeadEncoderError` when the trained
    verifier embeds every evaluation image alike.
    """
    rt = config.runtime
    total_steps = config.steps_per_epoch * config.epochs
    with strategy.scope():
        encoder = build_encoder(config.model, strategy, rt.seed, config.data.image_size)
        verifier = build_verifier(config, encoder, strategy)
        optimizer = build_verify_optimizer(config, total_steps)
        verifier.compile(optimizer=optimizer, jit_compile=rt.jit_compile)
        optimizer.build(verifier.trainable_variables)
    checkpoint = checkpoints.RunCheckpoint(model_dir, model=verifier, optimizer=optimizer)
    restored = checkpoint.restore_latest()
    if restored:
        logging.info("%s: resuming from %s", label, restored)
    elif init_from:
        try:
            checkpoints.resolve_checkpoint(init_from, warn_damaged=False)  # load_weights below reports damage
        except RunError as err:
            raise RunError(
                f"{err}. --init_from names the simsiam-pretrain run whose encoder starts the verifier "
                "(run `simsiam-pretrain` first: the demo writes outputs/demo), or set --init_from= for a random-init encoder"
            ) from None
        prefix = checkpoints.load_weights(init_from, what="encoder", model=tf.train.Checkpoint(backbone=encoder))
        logging.info("%s: encoder initialised from %s", label, prefix)
    start_step = int(optimizer.iterations.numpy())
    if start is not None:
        start()
    os.makedirs(model_dir, exist_ok=True)

    log_dir = os.path.join(model_dir, LOG_SUBDIR)
    started = time.time()
    if verifier.trainable_variables:
        nan_guard = NaNGuard(checkpoint)
        callbacks = [
            nan_guard,
            StepCheckpointer(checkpoint, config.checkpoint_every_steps),
            PreemptionCheckpointer(checkpoint),
            ScalarLogger(log_dir, config.log_every_steps),
            EpochHistory(os.path.join(model_dir, "history.json")),
            *callbacks,
        ]
        preemption.stop_if_requested(start_step, label)
        fit_from_step(
            verifier,
            lambda step: make_train_dataset(config, pools.train, step),
            start_step,
            config.steps_per_epoch,
            config.epochs,
            callbacks,
            progress.resolve_verbose(rt.verbose),
        )
        nan_guard.raise_if_tripped()
        preemption.stop_if_requested(int(optimizer.iterations.numpy()), label)
    else:
        total_steps = 0
        logging.info(
            "%s: the %s head on a frozen encoder has nothing to train; the labelled images set the threshold",
            label,
            config.head,
        )
    train_seconds = time.time() - started
    final_step = int(optimizer.iterations.numpy())

    metrics, scores = evaluate(verifier, pools, plan, config, check_alive=label)
    verifier.set_threshold(metrics["threshold"])
    checkpoint.save(final_step)
    write_scores(os.path.join(model_dir, "scores.npz"), plan, scores)
    fpr, tpr, _ = pair_metrics.roc_curve(plan.evaluation.labels, scores["eval_scores"])
    roc_path = pair_metrics.plot_roc(
        fpr,
        tpr,
        os.path.join(model_dir, "roc.png"),
        auc=metrics["roc_auc"],
        eer=metrics["eer"],
        title=f"{config.head} verifier, {label}",
    )
    _log_figures(log_dir, final_step, metrics, roc_path)
    metrics.update(step=final_step, total_steps=total_steps, train_seconds=round(train_seconds, 1))
    return metrics, verifier


def run(config, flags_text=None, callbacks=()):
    """Runs pair verification as `config` says; returns the metrics written to `metrics.json`.

    `callbacks`: Keras callbacks of the caller's (W&B, their own), added to the fit that
    trains the verifier (not to the random-init baseline's).

    `flags_text` becomes the run's flags.cfg once the run holds the directory's lock and
    its checkpoint, if any, was restored. Raises `RunError` with a message for bad
    input (too few classes, classes of a single image, a checkpoint that does not fit,
    another model in the run directory, the directory in use), for a NaN loss or
    non-finite state, and for a dead verifier; `PreemptedError` after a SIGTERM (the
    step in flight finished and was saved; run again to resume from it).
    """
    config.validate()
    return rundir.run_preemptible(_run, config, flags_text, callbacks)


def _run(config, start, callbacks=()):
    rt = config.runtime
    strategy = rundir.strategy_of(rt)

    train_source, eval_source = load_sources(config)
    if config.init_from:
        heldout.check_recorded(eval_source, config.init_from)
    pools = make_pools(config, train_source, eval_source)
    pools, budget = apply_label_budget(config, pools)
    logging.info("pair pools: %s", pools.summary())
    plan = make_plan(config, pools)

    label = "SimSiam encoder" if config.init_from else "random-init encoder"
    metrics, verifier = train_and_evaluate(
        config, strategy, pools, plan, rt.model_dir, config.init_from, label, start=start.started, callbacks=callbacks
    )
    verifier.save(os.path.join(rt.model_dir, "verifier.keras"))
    metrics.update(
        head=config.head,
        encoder=config.init_from or "random init",
        freeze_encoder=config.freeze_encoder,
        open_set=pools.open_set,
        pools=pools.summary(),
        num_val_pairs=int(plan.validation.labels.size),
        num_eval_pairs=int(plan.evaluation.labels.size),
        num_trials=config.num_trials,
    )
    if budget is not None:
        metrics["label_budget"] = budget.describe()
    metrics.update(heldout.metrics_entry(eval_source))
    metrics.update(image_files.skipped_entry(train=train_source, eval=eval_source))
    if plan.notes:
        metrics["notes"] = plan.notes
    if config.compare_pixels:
        metrics.update(evaluate_pixels(config, pools, plan))
    if config.compare_random_init:
        baseline, _ = train_and_evaluate(
            config, strategy, pools, plan, os.path.join(rt.model_dir, RANDOM_INIT_SUBDIR), None, "random-init encoder"
        )
        metrics.update({f"random_init_{k}": baseline[k] for k in FIGURE_KEYS + ("val_accuracy", "train_seconds")})
    if config.compare_pixels or config.compare_random_init:
        metrics["warnings"] = baselines.baseline_warnings(metrics)
        for warning in metrics["warnings"]:
            logging.warning("%s", warning)
    write_json_atomic(os.path.join(rt.model_dir, "metrics.json"), metrics)
    return metrics


def evaluate_pixels(config, pools, plan):
    """The pixel-distance verifier's figures on the run's plan, as pixels_*: cosine similarity of standardised pixels.

    The pixels are standardised with the statistics of the training pool's images, seen
    as evaluation sees them (`pair_images.make_image_dataset`); nothing is trained.
    """
    size = config.data.image_size
    note = baselines.pixel_baseline_note((size, size, 3))
    if note:
        logging.info("%s", note)
        return {"pixels_note": note}
    train_images = pair_images.make_image_dataset(
        pools.train.table, pools.train.indices, size, config.eval_batch_size, config.crop_fraction
    )
    verifier = baselines.PixelVerifier(baselines.fit_pixel_encoder(train_images), distance="cosine")
    figures, _ = evaluate(verifier, pools, plan, config)
    return {f"pixels_{k}": figures[k] for k in FIGURE_KEYS}


def summary_table(metrics):
    """Figures of the run (and of the random-init baseline when there is one) as a small text table."""
    columns = [("", "")] + [(k, k) for k in FIGURE_KEYS if k != "threshold"]
    rows = [[name for name, _ in columns]]
    encoders = [("", "SimSiam init" if metrics.get("encoder") != "random init" else "random init")]
    if "random_init_roc_auc" in metrics:
        encoders.append(("random_init_", "random init"))
    if "pixels_roc_auc" in metrics:
        encoders.append(("pixels_", "raw pixels"))
    for prefix, name in encoders:
        row = [str(name)]
        for _, key in columns[1:]:
            value = metrics.get(prefix + key)
            row.append("-" if value is None else f"{value:.3f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines += [f"warning: {warning}" for warning in metrics.get("warnings", [])]
    return "\n".join(lines)


def report(config, metrics):
    """What simsiam-verify prints at the end: the run directory, head and step, and `summary_table`."""
    print(f"\nrun directory: {config.runtime.model_dir} ({metrics['head']} head, step {metrics['step']})")
    print(summary_table(metrics))
