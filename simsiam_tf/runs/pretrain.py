"""The pretraining job: config in, trained encoder, checkpoints, logs and metrics out."""

import os
import time

import numpy as np
from absl import logging

from simsiam_tf import config as config_lib
from simsiam_tf import data, progress
from simsiam_tf.builders import (
    augment_placement,
    build_encoder,
    build_model,
    build_pretrain_optimizer,
    eval_center_crop,
    load_eval_source,
    load_initial_weights,
    load_tile_set,
    load_train_source,
    make_augment,
    make_view_transform,
)
from simsiam_tf.config.choices import WEIGHTS_SUFFIX
from simsiam_tf.data import holdout, image_files, service, tiles
from simsiam_tf.errors import CollapseError, RunError
from simsiam_tf.evaluation import baselines, monitor, probe, spectrum_monitor
from simsiam_tf.models import keras_backbones
from simsiam_tf.runs import heldout, rundir
from simsiam_tf.runs import spectrum as run_spectrum
from simsiam_tf.serving import export
from simsiam_tf.training import checkpoints, distribute, preemption, view_summary
from simsiam_tf.training.callbacks import LOG_SUBDIR, EpochHistory, NaNGuard, ScalarLogger, StepCheckpointer
from simsiam_tf.training.files import read_json, write_json_atomic
from simsiam_tf.training.finite import check_embeddings_alive
from simsiam_tf.training.loop import fit_from_step
from simsiam_tf.training.preemption import PreemptionCheckpointer


def eval_datasets(config, train_source, eval_source, batch_size=256):
    """(labelled train set, labelled test set) with evaluation preprocessing, for kNN and probes."""
    if train_source.num_classes < 2 or eval_source.num_classes < 2:
        raise RunError(
            f"kNN and probe evaluation need labels, but dataset {config.data.dataset!r} has none "
            "(a flat folder?): use class sub-folders, or turn evaluation off (--knn_every=0 --evaluate=false)"
        )
    try:
        data.check_label_spaces(train_source, eval_source, config.data.train_split, config.data.eval_split)
    except ValueError as err:
        raise RunError(f"kNN and probe evaluation: {err}") from None
    size, crop = config.data.image_size, eval_center_crop(config.data.image_size)
    return (
        data.make_eval_dataset(train_source, batch_size, size, center_crop=crop),
        data.make_eval_dataset(eval_source, batch_size, size, center_crop=crop),
    )


def evaluate_encoder(encoder, train_ds, test_ds, num_classes, knn_k, knn_temperature, probe_epochs, seed):
    """kNN and cached-feature linear-probe top-1 of an encoder."""
    train_x, train_y = monitor.extract_features(
        encoder, train_ds, normalize=False, progress_label="features of the training images (batches)"
    )
    test_x, test_y = monitor.extract_features(
        encoder, test_ds, normalize=False, progress_label="features of the evaluation images (batches)"
    )
    knn_pred = monitor.knn_predict(
        _l2n(train_x), train_y, _l2n(test_x), num_classes, k=knn_k, temperature=knn_temperature
    )
    probe_metrics = probe.train_linear_on_features(
        train_x, train_y, test_x, test_y, num_classes, epochs=probe_epochs, seed=seed
    )
    return {
        "knn_top1": float(np.mean(knn_pred == test_y)),
        "probe_top1": probe_metrics["top1"],
        "probe_top5": probe_metrics["top5"],
    }


def _l2n(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def run(config, flags_text=None, callbacks=()):
    """Pretrains as `config` says; resumes from the run's latest checkpoint when there is one.

    `callbacks`: Keras callbacks of the caller's (W&B, their own), added to the fit after
    the job's own (so they see the logs the job's callbacks added, e.g. the kNN accuracy).

    Returns the metrics written to `metrics.json`. `flags_text` (the tools' resolved
    flags) becomes the run's flags.cfg once the run holds the directory's lock and its
    checkpoint, if any, was restored. Raises `RunError` (bad input, another model
    in the run directory, the directory in use, NaN loss or non-finite state, a dead
    final encoder), `CollapseError` (the collapse alarm with on_collapse='stop') or
    `PreemptedError` (a SIGTERM: the step in flight finished and was saved; run again
    to resume from it).
    """
    config.validate()
    rt = config.runtime
    rundir.check_same_model(config, rt.model_dir)
    strategy = rundir.strategy_of(rt)
    try:
        distribute.per_replica_batch_size(config.batch_size, strategy)
    except ValueError as err:
        raise RunError(str(err)) from None
    # Only the chief writes the run directory; other workers of a multi-worker run write a temporary one.
    write_dir = distribute.write_dir_for(rt.model_dir, strategy)
    try:
        with (
            preemption.on_sigterm(enabled=not distribute.in_multi_worker_mode(strategy)),
            rundir.RunStart(write_dir, flags_text) as start,
        ):
            return _run(config, strategy, write_dir, start, callbacks)
    finally:
        distribute.remove_write_dir(write_dir, rt.model_dir)


def _run(config, strategy, write_dir, start, user_callbacks=()):
    rt = config.runtime
    model_dir = rt.model_dir

    tile_set = None
    if config.method == "simtriplet":
        tile_set = load_tile_set(config, config.data.train_split, config.data.num_train_examples)
        source = tile_set.source
    else:
        source = load_train_source(config)
    if source.num_examples < config.batch_size:
        raise RunError(
            f"batch_size {config.batch_size} is larger than the training set ({source.num_examples} images): "
            "lower --batch_size or add images"
        )
    steps_per_epoch = source.num_examples // config.batch_size
    if config.train_steps is not None:
        try:
            config = config_lib.epochs_for_steps(config, steps_per_epoch)
        except ValueError as err:
            raise RunError(str(err)) from None
        print(
            f"train_steps {config.train_steps}: {config.epochs} epochs of {steps_per_epoch} steps = "
            f"{config.epochs * steps_per_epoch} steps ({source.num_examples} images, batch {config.batch_size})",
            flush=True,
        )
    total_steps = steps_per_epoch * config.epochs
    augment = make_augment(config)
    placement = augment_placement(config)
    if config.data_service and not source.random_access:
        raise RunError(
            f"--data_service needs a source the service can split by step; {source.name!r} streams from its files: "
            "use --num_train_examples small enough to hold in memory, a folder, or no --data_service"
        )
    logging.info("photometric augmentation on the %s", placement)

    with strategy.scope():
        model = build_model(config, strategy)
        model.view_transform = make_view_transform(config, placement)
        optimizer = build_pretrain_optimizer(config, model, total_steps, steps_per_epoch)
        model.compile(optimizer=optimizer, jit_compile=rt.jit_compile)
        optimizer.build(model.trainable_variables)
    checkpoint = checkpoints.RunCheckpoint(model_dir, write_dir=write_dir, model=model, optimizer=optimizer)
    restored = checkpoint.restore_latest()
    if restored:
        logging.info("resuming from %s", restored)
    elif config.init_from and config.init_from.endswith(WEIGHTS_SUFFIX):
        keras_backbones.load_backbone_weights(model.backbone, config.init_from)
        logging.info("initialising the backbone from %s (the heads start fresh)", config.init_from)
    elif config.init_from:
        logging.info(
            "initialising weights from %s",
            checkpoints.load_weights(config.init_from, what="SimSiam model", model=model),
        )
    elif config.model.backbone_weights != "none":
        logging.info("backbone weights: %s", load_initial_weights(config.model, model.backbone))
    start_step = int(optimizer.iterations.numpy())
    distribute.check_same_on_all_workers(strategy, start_step, "the step to resume from")
    if restored:
        # A resumed run whose folder changed would hold out images it trained on.
        heldout.check_recorded(source, model_dir)
    if source.holdout is not None and start.flags_text is not None:
        start.flags_text += holdout.record_lines(source.holdout)
    start.started()

    def make_dataset(step):
        def dataset_fn(input_context=None):
            if tile_set is not None:
                return tiles.make_triplet_dataset(
                    tile_set, config.batch_size, augment, seed=rt.seed, start_step=step, input_context=input_context
                )
            make = data.make_pretrain_crops_dataset if placement == "device" else data.make_pretrain_dataset
            dataset = make(
                source, config.batch_size, augment, seed=rt.seed, start_step=step, input_context=input_context
            )
            if config.data_service:
                pipeline = input_context.input_pipeline_id if input_context is not None else 0
                dataset = service.distribute(
                    dataset, config.data_service, job_name=service.job_name(model_dir, step, pipeline)
                ).prefetch(data.AUTOTUNE)
            return dataset

        if strategy.num_replicas_in_sync > 1:
            return strategy.distribute_datasets_from_function(dataset_fn)
        return dataset_fn()

    log_dir = os.path.join(write_dir, LOG_SUBDIR)
    nan_guard = NaNGuard(checkpoint)
    collapse = monitor.CollapseMonitor(
        threshold=config.collapse_threshold,
        patience=config.collapse_patience,
        action=config.on_collapse,
        hint="see flags/ablation_no_stop_gradient.cfg for the paper's collapse ablation; "
        "check --stop_gradient, --use_predictor and the learning rate",
        # Epoch-end checks come too late for short runs and long epochs.
        check_every=min(config.log_every_steps, steps_per_epoch),
        running_mean=True,
    )
    callbacks = [nan_guard, collapse]
    eval_sets = None
    skipped = evaluation_skipped(config, source)
    if skipped:
        print(f"evaluation skipped: {skipped}", flush=True)
        config = config_lib.replace(config, knn_every=0, evaluate=False)
    elif source.holdout is not None:
        print(source.holdout.summary(), flush=True)
    elif (
        config.evaluate
        and config.data.dataset == "folder"
        and not config.data.holdout_fraction
        and not os.path.isdir(os.path.join(config.data.data_dir, config.data.eval_split))
    ):
        logging.warning(
            "--holdout_fraction=0: without train/ and test/ sub-folders the evaluation scores training images"
        )
    if config.knn_every or config.evaluate:
        eval_source = load_eval_source(config)
        eval_sets = eval_datasets(config, source, eval_source)
    if config.knn_every:
        callbacks.append(
            monitor.KNNMonitor(
                model.backbone,
                eval_sets[0],
                eval_sets[1],
                source.num_classes,
                every_n_epochs=config.knn_every,
                k=config.knn_k,
                temperature=config.knn_temperature,
                log_dir=log_dir,
            )
        )
    spectrum = run_spectrum.monitor_for(config, source, eval_sets, log_dir)
    alarms = [collapse] + ([spectrum] if spectrum is not None else [])
    best = run_spectrum.best_checkpoint_for(config, spectrum, model, checkpoint, write_dir)
    hold = (lambda: any(a.suspect for a in alarms)) if config.on_collapse == "stop" else None
    callbacks += [
        *alarms[1:],
        StepCheckpointer(checkpoint, config.checkpoint_every_steps, hold=hold),
        PreemptionCheckpointer(checkpoint, hold=hold),
        *([best] if best is not None else []),
        ScalarLogger(log_dir, config.log_every_steps),
        EpochHistory(os.path.join(write_dir, "history.json")),
        *user_callbacks,
    ]
    if start_step == 0:
        view_summary.write_views(log_dir, source, augment, seed=rt.seed)

    started = time.time()
    verbose = progress.resolve_verbose(rt.verbose)
    preemption.stop_if_requested(start_step, "pretraining")
    fit_from_step(model, make_dataset, start_step, steps_per_epoch, config.epochs, callbacks, verbose)
    train_seconds = time.time() - started
    nan_guard.raise_if_tripped()
    final_step = int(optimizer.iterations.numpy())
    preemption.stop_if_requested(final_step, "pretraining")
    # The final save below is skipped when the step is saved already: check the state anyway.
    checkpoint.check_finite(final_step)

    metrics = {
        "step": final_step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "train_seconds": round(train_seconds, 1),
    }
    history = (
        read_json(os.path.join(write_dir, "history.json"))
        if os.path.exists(os.path.join(write_dir, "history.json"))
        else []
    )
    if history:
        metrics.update({k: v for k, v in history[-1].items() if k not in ("epoch", "step")})
    if skipped:
        metrics["evaluation_skipped"] = skipped
    if source.holdout is not None:
        metrics["holdout"] = source.holdout.describe()
    metrics.update(image_files.skipped_entry(train=source))
    if spectrum is not None:
        metrics.update(spectrum_monitor.summary(spectrum))
    fired = min((a for a in alarms if a.collapsed), key=lambda a: a.collapsed_at_step, default=None)
    if fired is not None:
        metrics.update(collapsed_at_step=fired.collapsed_at_step, collapse_message=fired.message)
    if fired is not None and config.on_collapse == "stop":
        metrics.update(collapsed=True)
        write_json_atomic(os.path.join(write_dir, "metrics.json"), metrics)
        raise CollapseError(fired.message)
    metrics["collapsed"] = fired is not None
    if not checkpoint.saved(final_step):
        checkpoint.save(final_step)
    if best is not None:
        metrics.update(run_spectrum.keep_best(best, model, final_step))
    metrics["embedding_spread"] = round(check_encoder_alive(config, model.backbone, source, eval_sets), 4)

    preemption.stop_if_requested(final_step, "pretraining")
    if config.evaluate:
        metrics.update(_compare_with_random_init(config, model, strategy, source, eval_sets))
    if config.export:
        size = config.data.image_size
        metrics["export_dir"] = export.export_after_run(
            write_dir, "pretrain", model.backbone, size, eval_center_crop(size), projector=model.projector
        )
    write_json_atomic(os.path.join(write_dir, "metrics.json"), metrics)
    return metrics


def evaluation_skipped(config, source):
    """Why kNN and probe evaluation cannot run on `source` (no labels), or None when they can or are off."""
    if not (config.knn_every or config.evaluate) or source.labelled:
        return None
    what = "a flat folder of images" if config.data.dataset == "folder" else f"dataset {config.data.dataset!r}"
    return (
        f"{what} has no labels, so kNN and the linear probe have nothing to score against (class sub-folders "
        "give labels); the encoder is trained and saved as usual"
    )


ALIVE_CHECK_IMAGES = 256


def check_encoder_alive(config, encoder, train_source, eval_sets=None):
    """Raises `DeadEncoderError` when `encoder` maps a few hundred evaluation images to ~one embedding.

    The images are the test split's when evaluation loaded it, else the training set's,
    with the evaluation preprocessing. Returns their embeddings' normalised spread.
    """
    size = config.data.image_size
    if eval_sets is not None:
        images = eval_sets[1]
    else:
        images = data.make_eval_dataset(train_source, ALIVE_CHECK_IMAGES, size, center_crop=eval_center_crop(size))
    features, _ = monitor.extract_features(
        encoder, images.unbatch().take(ALIVE_CHECK_IMAGES).batch(ALIVE_CHECK_IMAGES), normalize=False
    )
    return check_embeddings_alive(features, what="encoder")


def _compare_with_random_init(config, model, strategy, source, eval_sets):
    kwargs = dict(
        num_classes=source.num_classes,
        knn_k=config.knn_k,
        knn_temperature=config.knn_temperature,
        probe_epochs=config.probe_epochs,
        seed=config.runtime.seed,
    )
    trained = evaluate_encoder(model.backbone, *eval_sets, **kwargs)
    with strategy.scope():
        random_encoder = build_encoder(config.model, strategy, config.runtime.seed, config.data.image_size)
    baseline = evaluate_encoder(random_encoder, *eval_sets, **kwargs)
    out = dict(trained)
    out.update({"random_init_" + k: v for k, v in baseline.items()})
    size = config.data.image_size
    note = baselines.pixel_baseline_note((size, size, 3))
    if note:
        logging.info("%s", note)
        out["notes"] = [note]
    else:
        pixels = evaluate_encoder(baselines.fit_pixel_encoder(eval_sets[0]), *eval_sets, **kwargs)
        out.update({"pixels_" + k: v for k, v in pixels.items()})
    out["warnings"] = baselines.baseline_warnings(out)
    for warning in out["warnings"]:
        logging.warning("%s", warning)
    return out


def summary_table(metrics):
    """The short table the demo prints: trained encoder against random init and raw pixels, then any warnings."""
    columns = [("", "SimSiam"), ("random_init_", "random init")]
    if "pixels_knn_top1" in metrics:
        columns.append(("pixels_", "raw pixels"))
    rows = [[""] + [name for _, name in columns]]
    for key, label in (("knn_top1", "kNN top-1"), ("probe_top1", "linear probe top-1")):
        if key in metrics:
            rows.append([label] + [f"{metrics[prefix + key]:.3f}" for prefix, _ in columns])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines += [f"note: {note}" for note in metrics.get("notes", [])]
    lines += [f"warning: {warning}" for warning in metrics.get("warnings", [])]
    return "\n".join(lines)


def report(config, metrics):
    """What simsiam-pretrain prints at the end: the run directory, the step, and `summary_table` after an evaluation."""
    print(f"\nrun directory: {config.runtime.model_dir} (step {metrics['step']} of {metrics['total_steps']})")
    if "random_init_knn_top1" in metrics:  # evaluate=true; knn_every alone puts knn_top1 there too
        print(summary_table(metrics))
