"""Config -> Keras objects: the encoder, SimSiam/SimTriplet, the verifier, optimizers, augmentation, data sources.

Every job, export, the benchmarks and the tests build their models here, so that a run
directory's flags.cfg rebuilds exactly the model that trained. Nothing here reads flags
or writes a run directory.
"""

import dataclasses
import inspect

import keras

from simsiam_tf import augment as augment_lib
from simsiam_tf import data, models, optim
from simsiam_tf.augment import device as device_augment
from simsiam_tf.data import holdout, tiles
from simsiam_tf.evaluation import probe
from simsiam_tf.models import backbones, keras_backbones, simtriplet
from simsiam_tf.models import verifier as verifier_lib
from simsiam_tf.training import distribute


def eval_center_crop(image_size, kind="pretrain"):
    """The centre-crop rule of a job's evaluation preprocessing.

    Pretraining and the linear probe resize + centre-crop ImageNet-size images and keep
    CIFAR-size ones as they are; the pair pipeline of verification ("verify") always
    resizes the whole image.
    """
    if kind == "verify":
        return False
    return image_size > 64


def sync_bn_of(model_config, strategy):
    """Whether the BatchNorm layers of a `ModelConfig`'s model synchronise across the replicas of `strategy`.

    The one place the sync_bn setting is read: the encoder, the heads and the verifier's
    head all take this value.
    """
    return distribute.resolve_sync_bn(model_config.sync_bn, strategy)


def build_encoder(model_config, strategy, seed, image_size=None):
    """A fresh backbone at random init; with the same seed it has the same initial weights.

    Keras Applications and registered backbones are built at `image_size` (required for
    them); the package's encoders take any size. The run's `backbone_weights` are not
    loaded here (`load_initial_weights`): a rebuilt run takes its checkpoint's.
    """
    keras.utils.set_random_seed(seed)
    arch, cifar_stem = backbones.parse_backbone_name(model_config.backbone)
    input_shape = (None, None, 3)
    if backbones.is_external(model_config.backbone):
        if image_size is None:
            raise ValueError(f"backbone {model_config.backbone!r} is built at one image size: pass image_size")
        input_shape = (int(image_size), int(image_size), 3)
    return backbones.build_backbone(
        arch,
        cifar_stem=cifar_stem,
        width_multiplier=model_config.width_multiplier,
        sync_bn=sync_bn_of(model_config, strategy),
        input_shape=input_shape,
        bn_convention=model_config.bn_convention,
        input_colour=model_config.input_colour,
    )


def same_named(config, constructor, **overrides):
    """The fields of `config` named as keyword arguments of `constructor`, as a dict; `overrides` win.

    Config fields carry their constructor argument's name, so a setting reaches its layer
    without being listed twice.
    """
    parameters = inspect.signature(constructor).parameters
    fields = {f.name for f in dataclasses.fields(config)}
    keywords = [name for name, p in parameters.items() if p.default is not p.empty and name in fields]
    return {name: getattr(config, name) for name in keywords} | overrides


def load_initial_weights(model_config, encoder):
    """Loads a new run's `backbone_weights` into `encoder` (built by `build_encoder`); returns their origin.

    "none" loads nothing; "imagenet" builds the Keras application with Keras' ImageNet
    weights (its cache, else a download; a RunError naming the file when neither works)
    and copies them; a `.weights.h5` path is loaded with the shapes checked.
    """
    origin = model_config.backbone_weights
    if origin == "none":
        return origin
    if origin == "imagenet":
        source = backbones.build_backbone(
            model_config.backbone, input_shape=tuple(encoder.input_shape[1:]), weights="imagenet", sync_bn=False
        )
        encoder.set_weights(source.get_weights())
    else:
        keras_backbones.load_backbone_weights(encoder, origin)
    return origin


def build_model(config, strategy):
    """The SimSiam (or SimTriplet) model of a `PretrainConfig` (call inside `strategy.scope()`)."""
    m = config.model
    model_class = simtriplet.SimTriplet if config.method == "simtriplet" else models.SimSiam
    projector_bn, predictor_bn = m.head_bn()
    arguments = same_named(
        m,
        models.SimSiam,
        sync_bn=sync_bn_of(m, strategy),
        projector_hidden_dim=m.projector_hidden_dim or None,
        projector_bn=projector_bn,
        predictor_bn=predictor_bn,
    )
    return model_class(build_encoder(m, strategy, config.runtime.seed, config.data.image_size), **arguments)


def build_pretrain_optimizer(config, model, total_steps, steps_per_epoch):
    """SGD with coupled weight decay on the paper's scaled, cosine-decayed learning rate."""
    peak_lr = optim.scaled_lr(config.base_lr, config.batch_size)
    schedule = optim.WarmupCosine(
        peak_lr=peak_lr,
        total_steps=total_steps,
        warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
        steps_per_epoch=schedule_steps_per_epoch(config, steps_per_epoch),
    )
    fixed_lr, fixed_vars = None, None
    if config.fixed_random_predictor:
        fixed_lr, fixed_vars = 0.0, model.predictor.trainable_variables
    elif config.fix_pred_lr:
        fixed_lr, fixed_vars = peak_lr, model.predictor.trainable_variables
    return optim.CoupledSGD(
        learning_rate=schedule,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        fixed_lr=fixed_lr,
        fixed_lr_variables=fixed_vars,
    )


def schedule_steps_per_epoch(config, steps_per_epoch):
    """The `steps_per_epoch` of `optim.WarmupCosine` for a config's lr_schedule: None (per step) or the epoch length."""
    return steps_per_epoch if config.lr_schedule == "epoch" else None


def build_linear_optimizer(config, total_steps, steps_per_epoch=None):
    """The probe's LARS or SGD on the scaled learning rate, cosine-decayed to 0 (a `LinearConfig`).

    With lr_schedule="epoch" the rate changes once per epoch of `steps_per_epoch` steps
    (needed then), as the reference's `adjust_learning_rate`.
    """
    if config.lr_schedule == "epoch" and steps_per_epoch is None:
        raise ValueError("lr_schedule='epoch' needs steps_per_epoch")
    peak_lr = optim.scaled_lr(config.base_lr, config.batch_size)
    schedule = optim.WarmupCosine(
        peak_lr=peak_lr, total_steps=total_steps, steps_per_epoch=schedule_steps_per_epoch(config, steps_per_epoch)
    )
    return probe.linear_optimizer(
        config.optimizer,
        schedule,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def build_verifier(config, encoder, strategy):
    """The `PairVerifier` of a `VerifyConfig` around `encoder`."""
    arguments = same_named(config, verifier_lib.PairVerifier, sync_bn=sync_bn_of(config.model, strategy))
    return verifier_lib.PairVerifier(encoder, **arguments)


def build_verify_optimizer(config, total_steps):
    """AdamW on a cosine-decayed learning rate."""
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1))
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)


def make_augment(config):
    """The two-view augmentation of a `PretrainConfig`."""
    return augment_lib.TwoViewAugment(
        **same_named(config.augment, augment_lib.TwoViewAugment, image_size=config.data.image_size)
    )


def augment_placement(config):
    """Where a `PretrainConfig`'s photometric augmentation runs: "host" or "device" (auto resolved)."""
    if config.method == "simtriplet":
        return device_augment.HOST
    return device_augment.resolve_augment_on(config.augment_on, config.runtime.strategy)


def make_view_transform(config, placement):
    """The train step's view transform for a placement: the photometric stage with "device", else None."""
    return device_augment.DeviceViews(make_augment(config)) if placement == device_augment.DEVICE else None


def load_tile_set(config, split, num_examples=None):
    """The tiles of a split with their neighbours (method simtriplet, dataset synthetic_tiles)."""
    return tiles.load_tile_set(
        config.data.dataset,
        pattern=config.tile_pattern,
        neighbourhood=config.neighbourhood,
        on_mismatch=config.tile_on_mismatch,
        tiles_per_side=config.tiles_per_side,
        **_split_arguments(config, split, num_examples),
    )


def _split_arguments(config, split, num_examples):
    """The arguments every loader of a split takes from a `PretrainConfig` (folder splits share one label space)."""
    d = config.data
    return dict(
        split=split,
        data_dir=d.data_dir,
        image_size=d.image_size,
        seed=config.runtime.seed,
        num_examples=num_examples,
        on_corrupt=d.on_corrupt,
        max_image_pixels=d.max_image_pixels,
        label_splits=(d.train_split, d.eval_split),
    )


def load_split_source(config, split, num_examples):
    """The images of one split of a `PretrainConfig`'s dataset (the tiles' images for synthetic_tiles).

    Folder splits share one label space: the class folders of the train and eval splits, by name."""
    if config.data.dataset == tiles.SYNTHETIC_TILES:
        return load_tile_set(config, split, num_examples).source
    return data.load_source(
        config.data.dataset,
        holdout=holdout_spec(config.data, split),
        **_split_arguments(config, split, num_examples),
    )


def holdout_spec(data_config, split):
    """The hold-out part (`data.holdout.HoldoutSpec`) a job loads as `split` of a folder without split folders."""
    d = data_config
    return holdout.spec_for_split(d.holdout_fraction, d.holdout_seed, split, d.train_split, d.eval_split)


def load_train_source(config):
    return load_split_source(config, config.data.train_split, config.data.num_train_examples)


def load_eval_source(config):
    return load_split_source(config, config.data.eval_split, config.data.num_eval_examples)
