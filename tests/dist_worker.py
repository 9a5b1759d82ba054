"""Processes started by tests/test_distribute.py.

Each mode sets up TensorFlow's devices or cluster before anything else touches
TensorFlow, which a pytest process (TF long started) cannot do.

  mirrored OUT                      one device against MirroredStrategy on 2 logical CPUs
  multi_worker OUT MODEL_DIR STEPS  one worker of the cluster in TF_CONFIG: train, checkpoint, restore
  checkpoint_loop MODEL_DIR         restore the latest checkpoint, then save forever
  sync_bn_default OUT               SimSiam and build_backbone with sync_bn left at its default, per strategy
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

TINY = dict(width_multiplier=0.125, dim=32, pred_dim=8, projector_layers=2)


class LossRecorder(keras.callbacks.Callback):
    """Keeps every step's logged loss."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def mirrored(out):
    """Three steps at global batch 8: one device, then 2 replicas with and without SyncBN."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from simsiam_tf import models, optim
    from simsiam_tf.models import backbones

    def build(sync_bn):
        keras.utils.set_random_seed(0)
        backbone = backbones.build_backbone(
            "resnet18", cifar_stem=True, width_multiplier=TINY["width_multiplier"], sync_bn=sync_bn
        )
        return models.SimSiam(
            backbone,
            dim=TINY["dim"],
            pred_dim=TINY["pred_dim"],
            projector_layers=TINY["projector_layers"],
            sync_bn=sync_bn,
        )

    rng = np.random.default_rng(0)
    views = rng.random((2, 24, 16, 16, 3), dtype=np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((views[0], views[1])).batch(8)

    def train(strategy, sync_bn, weights):
        with strategy.scope():
            model = build(sync_bn)
            model.set_weights(weights)
            schedule = optim.WarmupCosine(peak_lr=0.5, total_steps=10)
            model.compile(
                optimizer=optim.CoupledSGD(schedule, momentum=0.9, weight_decay=1e-4), run_eagerly=True
            )  # same numerics as a compiled step; far cheaper to start
        recorder = LossRecorder()
        model.fit(dataset, epochs=1, verbose=0, callbacks=[recorder])
        return model, recorder.losses

    with tf.device("/cpu:0"):
        initial = build(True).get_weights()
    single, single_losses = train(tf.distribute.get_strategy(), True, initial)
    # One MirroredStrategy per process: two of them share collective instance keys.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    synced, synced_losses = train(strategy, True, initial)
    unsynced, unsynced_losses = train(strategy, False, initial)
    layers = synced.backbone.layers + synced.projector.layers + synced.predictor.layers
    bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    np.savez(
        out,
        replicas=strategy.num_replicas_in_sync,
        synchronized=[bn.synchronized for bn in bns],
        single_losses=single_losses,
        synced_losses=synced_losses,
        unsynced_losses=unsynced_losses,
        iterations=[int(m.optimizer.iterations.numpy()) for m in (single, synced, unsynced)],
        **{f"initial_{i}": w for i, w in enumerate(initial)},
        **{f"single_{i}": v.numpy() for i, v in enumerate(single.weights)},
        **{f"synced_{i}": v.numpy() for i, v in enumerate(synced.weights)},
        **{f"unsynced_{i}": v.numpy() for i, v in enumerate(unsynced.weights)},
    )


def sync_bn_default(out):
    """Which BatchNorm layers come out synchronized when the Python API's sync_bn is left at its default."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from simsiam_tf import models
    from simsiam_tf.models import backbones

    def synchronized(strategy):
        with strategy.scope():
            backbone = backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.125)
            model = models.SimSiam(backbone, dim=16, pred_dim=8, projector_layers=2)
        layers = model.backbone.layers + model.projector.layers + model.predictor.layers
        return [layer.synchronized for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]

    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    np.savez(
        out,
        two_replicas=synchronized(two),
        default_strategy=synchronized(tf.distribute.get_strategy()),
        one_device=synchronized(tf.distribute.OneDeviceStrategy("/cpu:0")),
        replicas=two.num_replicas_in_sync,
    )


def multi_worker(out, model_dir, steps):
    """One worker of the TF_CONFIG cluster: the tiny pretraining setup for `steps` steps,
    checkpointing every step; then a fresh model restores the run's latest checkpoint."""
    from simsiam_tf.training import distribute

    strategy = distribute.get_strategy("multi_worker_mirrored")
    from simsiam_tf import builders, data
    from simsiam_tf import config as config_lib
    from simsiam_tf.training import checkpoints
    from simsiam_tf.training.callbacks import StepCheckpointer

    config = config_lib.replace(
        config_lib.PretrainConfig(),
        **{
            "runtime.model_dir": model_dir,
            "data.image_size": 16,
            "data.num_train_examples": 32,
            "batch_size": 8,
            "epochs": 1,
            **{"model." + k: v for k, v in TINY.items()},
        },
    )
    per_replica = distribute.per_replica_batch_size(config.batch_size, strategy)
    source = builders.load_train_source(config)
    augment = builders.make_augment(config)
    steps_per_epoch = source.num_examples // config.batch_size

    def build():
        with strategy.scope():
            model = builders.build_model(config, strategy)
            optimizer = builders.build_pretrain_optimizer(
                config, model, steps_per_epoch * config.epochs, steps_per_epoch
            )
            model.compile(optimizer=optimizer)
            optimizer.build(model.trainable_variables)
        write_dir = distribute.write_dir_for(model_dir, strategy)
        checkpoint = checkpoints.RunCheckpoint(model_dir, write_dir=write_dir, model=model, optimizer=optimizer)
        restored = checkpoint.restore_latest()
        start = int(optimizer.iterations.numpy())
        distribute.check_same_on_all_workers(strategy, start, "the restored step")
        return model, checkpoint, write_dir, restored, start

    model, checkpoint, write_dir, restored, start = build()
    dataset = strategy.distribute_datasets_from_function(
        lambda context: data.make_pretrain_dataset(
            source, config.batch_size, augment, seed=0, start_step=start, input_context=context
        )
    )
    recorder = LossRecorder()
    distribute.fit(
        model,
        dataset,
        epochs=1,
        steps_per_epoch=steps,
        callbacks=[recorder, StepCheckpointer(checkpoint, 1)],
        verbose=0,
    )
    distribute.remove_write_dir(write_dir, model_dir)
    iterations = int(model.optimizer.iterations.numpy())
    # A collective: no worker reads the run directory before the chief's last save is done.
    distribute.check_same_on_all_workers(strategy, iterations, "the final step")

    again, _, again_write_dir, again_restored, again_start = build()
    distribute.remove_write_dir(again_write_dir, model_dir)
    task = strategy.cluster_resolver.task_id
    try:
        distribute.check_same_on_all_workers(strategy, 10 + task, "the step to resume from")
        disagreement = ""
    except RuntimeError as err:
        disagreement = str(err)
    np.savez(
        os.path.join(out, f"worker{task}.npz"),
        chief=distribute.is_chief(strategy),
        replicas=strategy.num_replicas_in_sync,
        per_replica=per_replica,
        sync_bn=model.sync_bn,
        restored=str(restored),
        start=start,
        write_dir=write_dir,
        write_dirs_left=[os.path.exists(d) and d != model_dir for d in (write_dir, again_write_dir)],
        iterations=iterations,
        losses=recorder.losses,
        again_restored=str(again_restored),
        again_start=again_start,
        disagreement=disagreement,
        **{f"var_{i}": v.numpy() for i, v in enumerate(model.weights)},
        **{f"again_{i}": v.numpy() for i, v in enumerate(again.weights)},
    )


def checkpoint_loop(model_dir):
    """Restores the run's latest checkpoint, reports its step, then saves step after step.

    Every saved checkpoint holds `step` and a large variable filled with `step`, so a
    torn checkpoint shows as a mismatch; the parent kills this process at random.
    """
    from simsiam_tf.training import checkpoints

    step = tf.Variable(0, dtype=tf.int64)
    weights = tf.Variable(tf.zeros([1 << 21]))
    checkpoint = checkpoints.RunCheckpoint(model_dir, max_to_keep=2, step=step, weights=weights)
    checkpoint.restore_latest()
    start = int(step.numpy())
    values = weights.numpy()
    if not (values.min() == values.max() == start):
        raise SystemExit(f"checkpoint of step {start} holds weights {values.min()}..{values.max()}")
    print(f"restored {start}", flush=True)
    while True:
        step.assign_add(1)
        weights.assign(tf.fill(weights.shape, tf.cast(step, tf.float32)))
        checkpoint.save(int(step.numpy()))
        print(f"saved {int(step.numpy())}", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "mirrored":
        mirrored(*args)
    elif mode == "multi_worker":
        multi_worker(args[0], args[1], int(args[2]))
    elif mode == "sync_bn_default":
        sync_bn_default(*args)
    elif mode == "checkpoint_loop":
        checkpoint_loop(*args)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
