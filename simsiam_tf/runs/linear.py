"""The linear-evaluation job: a pretrained encoder, frozen, and a linear classifier trained on it.

Two modes give the same metrics. End to end (the paper's protocol): every step runs the
frozen encoder on fresh random-resized crops. Cached features (no augmentation): the
encoder runs once over the training set and the classifier trains on those features.
Either way the job ends with the reference's sanity check: every encoder variable,
BatchNorm moving statistics included, must be bit-identical to what was loaded.
With a label budget the classifier trains on a class-balanced subset of the train split
(`data.label_budget`); with `finetune` the whole encoder trains with it (semi-supervised
evaluation as SimCLR/BYOL: augmented crops, BatchNorm in training mode, SGD with
momentum, no weight decay), and the sanity check, which would fail by design, is skipped.
"""

import contextlib
import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import data, models, optim, progress
from simsiam_tf.builders import build_encoder, build_linear_optimizer, eval_center_crop, holdout_spec
from simsiam_tf.data import image_files, label_budget
from simsiam_tf.errors import EncoderChangedError, RunError
from simsiam_tf.evaluation import baselines, batch_fit, monitor, probe
from simsiam_tf.runs import heldout, rundir
from simsiam_tf.training import checkpoints, preemption
from simsiam_tf.training.callbacks import LOG_SUBDIR, EpochHistory, NaNGuard, ScalarLogger, StepCheckpointer
from simsiam_tf.training.files import write_json_atomic
from simsiam_tf.training.finite import check_embeddings_alive
from simsiam_tf.training.loop import fit_from_step
from simsiam_tf.training.preemption import PreemptionCheckpointer

RANDOM_INIT_SUBDIR = "random_init"
PIXELS_SUBDIR = "pixels"


def snapshot(encoder):
    """Copies of every encoder variable, trainable and not, keyed by variable path."""
    return [(v.path, np.array(v.numpy(), copy=True)) for v in encoder.weights]


def check_unchanged(encoder, reference, source):
    """Raises EncoderChangedError, naming the first variable that differs, unless the encoder is bit-identical to `reference`."""
    current = encoder.weights
    if len(current) != len(reference):
        raise EncoderChangedError(
            f"sanity check failed: the encoder has {len(current)} variables, {len(reference)} were loaded from {source}"
        )
    changed = []
    for variable, (path, before) in zip(current, reference):
        after = variable.numpy()
        if after.dtype != before.dtype or after.shape != before.shape or after.tobytes() != before.tobytes():
            changed.append((path, after, before))
    if not changed:
        return
    path, after, before = changed[0]
    if after.shape == before.shape:
        detail = f"max |change| {float(np.max(np.abs(after.astype(np.float64) - before.astype(np.float64)))):.3g}"
    else:
        detail = f"shape {before.shape} -> {after.shape}"
    raise EncoderChangedError(
        f"sanity check failed: encoder variable {path} changed during the linear probe ({detail}); "
        f"{len(changed)} of {len(reference)} variables differ from {source}. The probe must run the encoder "
        "with training=False and keep it non-trainable: BatchNorm moving statistics are part of the frozen model"
    )


def _load_sources(config):
    d, seed = config.data, config.runtime.seed
    sources = [
        data.load_source(
            d.dataset,
            split=split,
            data_dir=d.data_dir,
            image_size=d.image_size,
            seed=seed,
            num_examples=n,
            on_corrupt=d.on_corrupt,
            max_image_pixels=d.max_image_pixels,
            label_splits=(d.train_split, d.eval_split),
            holdout=holdout_spec(d, split),
        )
        for split, n in ((d.train_split, d.num_train_examples), (d.eval_split, d.num_eval_examples))
    ]
    for source, split in zip(sources, (d.train_split, d.eval_split)):
        if not source.labelled:
            raise RunError(
                f"the linear probe needs labels, but split {split!r} of dataset {d.dataset!r} has none "
                "(a flat folder?): use a labelled dataset, or class sub-folders"
            )
    try:
        data.check_label_spaces(*sources, d.train_split, d.eval_split)
    except ValueError as err:
        raise RunError(f"the linear probe: {err}") from None
    return sources


def _encoder_description(model_config):
    return f"encoder ({model_config.backbone}, width_multiplier {model_config.width_multiplier:g})"


def load_encoder(config, strategy, checkpoint=None):
    """The encoder of the pretraining run `config.init_from` (or of `checkpoint`); returns (encoder, checkpoint prefix read).

    Given a run directory, a damaged or non-finite newest checkpoint is skipped for the
    next older one, with a warning; the prefix returned is the one read.
    """
    with strategy.scope():
        encoder = build_encoder(config.model, strategy, config.runtime.seed, config.data.image_size)
    prefix = checkpoints.load_weights(
        checkpoint or config.init_from,
        what=_encoder_description(config.model),
        model=tf.train.Checkpoint(backbone=encoder),
    )
    return encoder, prefix


def _write_scalars(log_dir, step, values):
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation"))
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)
    writer.close()


def _steps_per_epoch(config, num_examples):
    if config.cached:
        return math.ceil(num_examples / config.batch_size)
    if num_examples < config.batch_size:
        raise RunError(
            f"batch_size {config.batch_size} is larger than the training set ({num_examples} images): lower --batch_size"
        )
    return num_examples // config.batch_size


def fit_to_data(config, num_train_examples):
    """`batch_fit.fit_linear_config`, its notes logged and its warnings kept; returns (config, warnings)."""
    config, notes, warnings = batch_fit.fit_linear_config(config, num_train_examples)
    for note in notes:
        logging.info("%s", note)
    for warning in warnings:
        logging.warning("%s", warning)
    return config, warnings


def schedule_line(config, num_train_examples):
    """The line the job starts with: batch, learning rate, steps per epoch and in all, optimizer and features."""
    steps = _steps_per_epoch(config, num_train_examples)
    lr = optim.scaled_lr(config.base_lr, config.batch_size)
    if config.cached:
        features = "cached, standardised features" if config.standardize else "cached raw features"
    else:
        features = "augmented crops" if config.augment else "the evaluation preprocessing, end to end"
    job = "fine-tuning encoder + classifier" if config.finetune else "linear probe"
    return (
        f"{job}: batch {config.batch_size}, lr {lr:g} (base_lr {config.base_lr:g} x {config.batch_size} / 256), "
        f"{steps} steps per epoch x {config.epochs} epochs = {steps * config.epochs} steps; "
        f"{config.optimizer} on {features}"
    )


def probe_encoder(
    config, strategy, encoder, train_source, eval_source, run_dir, start=None, check_alive=False, callbacks=()
):
    """Trains and evaluates a linear classifier on the frozen `encoder`, in `run_dir`.

    Resumes from the latest checkpoint in `run_dir/checkpoints`; `start()` (if given) is
    called once that restore succeeded, before anything is written. With `check_alive`
    the encoder's features of the eval split must vary (`check_embeddings_alive`).
    Returns top-1/top-5 on the eval split and the step counts. `callbacks`: the caller's
    Keras callbacks, added to the classifier's fit.
    """
    rt = config.runtime
    verbose = progress.resolve_verbose(rt.verbose)
    user_callbacks = list(callbacks)
    image_size, center_crop = config.data.image_size, eval_center_crop(config.data.image_size)
    num_classes = train_source.num_classes
    cached = config.cached
    steps_per_epoch = _steps_per_epoch(config, train_source.num_examples)
    total_steps = steps_per_epoch * config.epochs

    # The cached-feature classifier trains as a plain Keras model on one device: the
    # encoder already ran, and a linear layer gains nothing from replicas.
    with contextlib.nullcontext() if cached else strategy.scope():
        make_model = models.FineTunedClassifier if config.finetune else models.LinearProbe
        linear_probe = make_model(encoder, num_classes)
        optimizer = build_linear_optimizer(config, total_steps, steps_per_epoch)
        optimizer.build(linear_probe.trainable_variables)
    checkpoint = checkpoints.RunCheckpoint(run_dir, model=linear_probe, optimizer=optimizer)
    restored = checkpoint.restore_latest()
    start_step = int(optimizer.iterations.numpy())
    if restored:
        logging.info("resuming the probe from %s (step %d of %d)", restored, start_step, total_steps)
    if start is not None:
        start()

    log_dir = os.path.join(run_dir, LOG_SUBDIR)
    history = EpochHistory(os.path.join(run_dir, "history.json"))
    eval_ds = data.make_eval_dataset(eval_source, config.eval_batch_size, image_size, center_crop=center_crop)
    test = None
    nan_guard = NaNGuard(checkpoint)
    started = time.time()
    callbacks = [nan_guard, ScalarLogger(log_dir, config.log_every_steps)]
    if cached:
        if 0 < start_step < total_steps:
            raise RunError(
                f"{run_dir} holds an unfinished end-to-end probe (step {start_step} of {total_steps}); "
                "resume it with --cache_features=false, or give this run another --model_dir"
            )
        if start_step == 0:
            train_ds = data.make_eval_dataset(train_source, config.eval_batch_size, image_size, center_crop=center_crop)
            train_x, train_y = monitor.extract_features(
                encoder, train_ds, normalize=False, progress_label="features of the training images (batches)"
            )
            test = monitor.extract_features(
                encoder, eval_ds, normalize=False, progress_label="features of the evaluation images (batches)"
            )
            test_x = test[0]
            if config.standardize:
                mean, std = probe.feature_statistics(train_x)
                train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
            probe.train_linear_on_features(
                train_x,
                train_y,
                test_x,
                test[1],
                num_classes,
                epochs=config.epochs,
                batch_size=config.batch_size,
                standardize=False,
                seed=rt.seed,
                verbose=verbose,
                optimizer=optimizer,
                classifier=linear_probe.classifier,
                callbacks=callbacks
                + [probe.EpochEvaluation(linear_probe.classifier, test_x, test[1]), history]
                + user_callbacks,
            )
            if config.standardize:
                # The stored classifier then acts on the encoder's features as they are.
                probe.fold_standardization(linear_probe.classifier, mean, std)
    else:

        def make_dataset(step):
            # The probe pipeline is deterministic in (seed, step), so skipping `step`
            # batches lands exactly where an interrupted run stopped.
            return data.make_probe_train_dataset(
                train_source,
                config.batch_size,
                image_size,
                seed=rt.seed,
                augment=config.augment,
                crop_scale=tuple(config.crop_scale),
                center_crop=center_crop,
                flip_prob=config.flip_prob,
            ).skip(step)

        with strategy.scope():
            linear_probe.compile(
                optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="train_top1")],
                jit_compile=rt.jit_compile,
            )
        # The frozen encoder's features of the evaluation images, once, for the per-epoch evaluation.
        test = monitor.extract_features(
            encoder, eval_ds, normalize=False, progress_label="features of the evaluation images (batches)"
        )
        callbacks += [
            StepCheckpointer(checkpoint, config.checkpoint_every_steps),
            PreemptionCheckpointer(checkpoint),
            probe.EpochEvaluation(linear_probe.classifier, *test),
            history,
            *user_callbacks,
        ]
        preemption.stop_if_requested(start_step, "the linear probe")
        fit_from_step(linear_probe, make_dataset, start_step, steps_per_epoch, config.epochs, callbacks, verbose)
    nan_guard.raise_if_tripped()
    train_seconds = time.time() - started
    final_step = int(optimizer.iterations.numpy())
    preemption.stop_if_requested(final_step, "the linear probe")
    if not checkpoint.saved(final_step):
        checkpoint.save(final_step)

    test_x, test_y = test if test is not None else monitor.extract_features(encoder, eval_ds, normalize=False)
    if check_alive:
        check_embeddings_alive(test_x, what="encoder (its features of the eval split)")
    logits = linear_probe.classifier(test_x).numpy()
    result = {"top1": probe.topk_accuracy(logits, test_y, 1), "top5": probe.topk_accuracy(logits, test_y, 5)}
    _write_scalars(log_dir, final_step, result)
    # The reference reports the best epoch's top-1 (best_acc1); top1 is the final epoch's.
    best = probe.best_epoch(history.epochs)
    result["top1_best"], result["best_epoch"] = best if best is not None else (result["top1"], config.epochs)
    result.update(
        step=final_step, total_steps=total_steps, steps_per_epoch=steps_per_epoch, train_seconds=round(train_seconds, 1)
    )
    return result


def run(config, flags_text=None, callbacks=()):
    """Linear evaluation as `config` says; resumes from the run's latest checkpoint when there is one.

    `callbacks`: Keras callbacks of the caller's (W&B, their own), added to the fit of the
    probe on the loaded encoder (not to the random-init baseline's).

    Returns the metrics written to `metrics.json` (top1, top5 as fractions, and with
    `compare_random_init` random_init_top1/top5; `init_from` is the checkpoint read).
    `flags_text` becomes the run's flags.cfg once the run holds the directory's lock and
    its checkpoint, if any, was restored. Raises `RunError` for bad input (no
    checkpoint, another architecture, unlabelled data, the directory in use, a dead
    encoder), `EncoderChangedError` when the sanity check finds the frozen encoder changed,
    and `PreemptedError` after a SIGTERM (the step in flight finished and was saved; run
    again to resume from it).
    """
    config.validate()
    # Fails early, before anything is written, when there is none; the load below reports damage.
    checkpoints.resolve_checkpoint(config.init_from, warn_damaged=False)
    return rundir.run_preemptible(_run, config, flags_text, callbacks)


def _run(config, start, callbacks=()):
    rt = config.runtime
    strategy = rundir.strategy_of(rt)
    train_source, eval_source = _load_sources(config)
    heldout.check_recorded(eval_source, config.init_from)
    train_source, budget = apply_label_budget(config, train_source)
    config = finetune_defaults(config)
    config, warnings = fit_to_data(config, train_source.num_examples)
    print(schedule_line(config, train_source.num_examples), flush=True)

    encoder, prefix = load_encoder(config, strategy)
    logging.info("probing the encoder of %s", prefix)
    loaded = snapshot(encoder)
    result = probe_encoder(
        config,
        strategy,
        encoder,
        train_source,
        eval_source,
        rt.model_dir,
        start=start.started,
        check_alive=True,
        callbacks=callbacks,
    )
    if not config.finetune:
        check_unchanged(encoder, loaded, prefix)

    metrics = {
        "init_from": prefix,
        "mode": "cached_features" if config.cached else "end_to_end",
        "optimizer": config.optimizer,
        "batch_size": config.batch_size,
        "lr": optim.scaled_lr(config.base_lr, config.batch_size),
        "epochs": config.epochs,
        "standardize": bool(config.standardize),
        "num_train_examples": train_source.num_examples,
        "num_classes": train_source.num_classes,
        "finetune": config.finetune,
        "sanity_check": FINETUNE_SANITY if config.finetune else "passed",
    }
    if budget is not None:
        metrics["label_budget"] = budget.describe()
    metrics.update(heldout.metrics_entry(eval_source))
    metrics.update(image_files.skipped_entry(train=train_source, eval=eval_source))
    metrics.update(result)
    if config.compare_random_init or config.compare_baselines:
        with strategy.scope():
            random_encoder = build_encoder(config.model, strategy, rt.seed, config.data.image_size)
        initial = snapshot(random_encoder)
        baseline = probe_encoder(
            config, strategy, random_encoder, train_source, eval_source, os.path.join(rt.model_dir, RANDOM_INIT_SUBDIR)
        )
        if not config.finetune:
            check_unchanged(random_encoder, initial, "its random initialisation")
        metrics.update(random_init_top1=baseline["top1"], random_init_top5=baseline["top5"])
    if config.compare_baselines:
        metrics.update(_probe_pixels(config, strategy, train_source, eval_source))
    comparison = baselines.baseline_warnings(metrics)
    for warning in comparison:
        logging.warning("%s", warning)
    metrics["warnings"] = warnings + comparison
    write_json_atomic(os.path.join(rt.model_dir, "metrics.json"), metrics)
    return metrics


FINETUNE_SANITY = "skipped: --finetune trains the encoder, so it is meant to change"


def apply_label_budget(config, train_source):
    """(train source, LabelBudget) under the config's label budget; (train source, None) without one."""
    if config.labels_per_class is None and config.label_fraction is None:
        return train_source, None
    try:
        budget = label_budget.draw_label_budget(
            label_budget.source_labels(train_source),
            config.labels_per_class,
            config.label_fraction,
            seed=config.runtime.seed,
        )
    except ValueError as err:
        raise RunError(f"{config.data.train_split} split: {err}") from None
    logging.info("%s", budget.summary())
    print(budget.summary(), flush=True)
    return label_budget.subset_source(train_source, budget.indices), budget


def finetune_defaults(config):
    """With `finetune`, the choices left at None set to the semi-supervised protocol (SGD, augmented crops)."""
    if not config.finetune:
        return config
    chosen = {"optimizer": "sgd", "augment": True, "standardize": False, "cache_features": False}
    return dataclasses.replace(config, **{k: v for k, v in chosen.items() if getattr(config, k) is None})


def _probe_pixels(config, strategy, train_source, eval_source):
    """The raw-pixel baseline through the same probe: pixels_top1/top5, or a note saying why there is none.

    With `finetune` there is no encoder to fine-tune: the pixels get the linear probe
    (cached, standardised), the protocol a small set gets anyway.
    """
    if config.finetune:
        config = dataclasses.replace(config, finetune=False, augment=False, cache_features=True, standardize=True)
    size = config.data.image_size
    note = baselines.pixel_baseline_note((size, size, 3))
    if note:
        logging.info("%s", note)
        return {"notes": [note]}
    train_ds = data.make_eval_dataset(train_source, config.eval_batch_size, size, center_crop=eval_center_crop(size))
    pixels = baselines.fit_pixel_encoder(train_ds)
    result = probe_encoder(
        config, strategy, pixels, train_source, eval_source, os.path.join(config.runtime.model_dir, PIXELS_SUBDIR)
    )
    return {"pixels_top1": result["top1"], "pixels_top5": result["top5"]}


def summary(metrics):
    """A few lines for the console: top-1/top-5, and the random-init baseline when there is one."""
    lines = [
        f"linear probe ({metrics['mode'].replace('_', ' ')}): top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}"
    ]
    if "top1_best" in metrics:
        lines.append(
            f"best epoch's top-1 (the reference's figure): {metrics['top1_best']:.4f} "
            f"(epoch {metrics['best_epoch']} of {metrics['epochs']})"
        )
    if "random_init_top1" in metrics:
        lines.append(
            f"same encoder at random init:  top-1 {metrics['random_init_top1']:.4f}  "
            f"top-5 {metrics['random_init_top5']:.4f}"
        )
    if "pixels_top1" in metrics:
        lines.append(
            f"raw pixels, same probe:       top-1 {metrics['pixels_top1']:.4f}  top-5 {metrics['pixels_top5']:.4f}"
        )
    if metrics.get("finetune"):
        lines[0] = lines[0].replace("linear probe", "fine-tuned encoder + linear classifier")
        lines.append(f"sanity check: {metrics['sanity_check']}")
    else:
        lines.append(
            f"sanity check: {metrics['sanity_check']} (the frozen encoder is bit-identical to {metrics['init_from']})"
        )
    if "label_budget" in metrics:
        b = metrics["label_budget"]
        lines.append(f"label budget: {b['num_labelled']} labelled training images, seed {b['seed']}")
    lines += [f"note: {note}" for note in metrics.get("notes", [])]
    lines += [f"warning: {warning}" for warning in metrics.get("warnings", [])]
    return "\n".join(lines)


def report(config, metrics):
    """What simsiam-linear prints at the end: the run directory and `summary`."""
    print(f"\nrun directory: {config.runtime.model_dir}")
    print(summary(metrics))
