"""Frozen configuration dataclasses, one per job.

The command-line tools turn absl flags into these; notebooks and tests build them
directly. Nothing here imports absl or TensorFlow.
"""

import dataclasses
import math
from typing import Optional, Tuple

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
COLLAPSE_ACTIONS = ("stop", "warn", "ignore")
METHODS = ("simsiam", "simtriplet")
NEIGHBOURHOODS = ("4", "8", "group")
TILE_PATTERN = r"(?P<group>.+)_x(?P<col>\d+)_y(?P<row>\d+)\.(png|jpe?g)"
TILE_DATASETS = ("synthetic_tiles", "folder")
PROBE_OPTIMIZERS = ("lars", "sgd")
VERIFY_HEADS = ("contrastive", "triplet", "classifier", "cosine")
VERIFY_AUGMENTS = ("none", "crop", "crop_flip")
MININGS = ("semi_hard", "batch_hard")
DISTANCES = ("l2", "squared_l2", "angular")
EXPORT_KINDS = ("pretrain", "linear", "verify")
ON_BAD_FILE = ("error", "skip")
SYNC_BN = ("auto", "true", "false")
LR_SCHEDULES = ("step", "epoch")
PROJECTOR_BN = ("all", "hidden", "none")
PREDICTOR_BN = ("hidden", "all", "none")
AUGMENT_ON = ("auto", "host", "device")
# Encoders for 28-64 px images (simsiam_tf.small_backbones).
SMALL_BACKBONES = ("small_resnet", "small_vgg")
DATA_SERVICE_SCHEME = "grpc://"


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a job runs: devices, numerics, logging cadence."""

    model_dir: str = "outputs/demo"
    seed: int = 0
    strategy: str = "auto"
    tpu: Optional[str] = None
    precision: str = "float32"
    jit_compile: bool = False
    verbose: int = 1

    def validate(self):
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("precision", self.precision, PRECISIONS)
        if self.strategy == "tpu" and not self.tpu:
            raise ValueError(
                "strategy='tpu' needs the TPU address: set tpu (e.g. --tpu=grpc://10.0.0.2:8470 or --tpu=local)"
            )
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images: the embedded synthetic set, a TFDS name, or a folder."""

    dataset: str = "synthetic"
    data_dir: Optional[str] = None
    image_size: int = 32
    train_split: str = "train"
    eval_split: str = "test"
    num_train_examples: Optional[int] = None
    num_eval_examples: Optional[int] = None
    on_corrupt: str = "error"

    def validate(self):
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if self.dataset == "folder" and not self.data_dir:
            raise ValueError(
                "dataset='folder' needs data_dir pointing at a folder of images (class sub-folders or flat)"
            )
        check_choice("on_corrupt", self.on_corrupt, ON_BAD_FILE)
        for name in ("num_train_examples", "num_eval_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder and SimSiam heads."""

    backbone: str = "resnet18_cifar"
    width_multiplier: float = 0.25
    dim: int = 512
    pred_dim: int = 128
    projector_layers: int = 2
    projector_hidden_dim: int = 0
    projector_bn: str = "all"
    predictor_bn: str = "hidden"
    stop_gradient: bool = True
    use_predictor: bool = True
    heads_bn: bool = True
    sync_bn: str = "auto"

    def validate(self):
        from_names = ("resnet18", "resnet34", "resnet50")
        arch = self.backbone[: -len("_cifar")] if self.backbone.endswith("_cifar") else self.backbone
        if arch not in from_names and self.backbone not in SMALL_BACKBONES:
            valid = ", ".join([n + s for n in from_names for s in ("", "_cifar")] + list(SMALL_BACKBONES))
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {valid}")
        check_number("width_multiplier", self.width_multiplier, low=0, low_open=True)
        if self.projector_layers not in (2, 3):
            raise ValueError(
                f"projector_layers must be 2 (CIFAR recipe) or 3 (ImageNet recipe), got {self.projector_layers}"
            )
        if self.dim < 1 or self.pred_dim < 1:
            raise ValueError("dim and pred_dim must be positive")
        check_choice("sync_bn", self.sync_bn, SYNC_BN)
        if self.projector_hidden_dim < 0:
            raise ValueError(
                f"projector_hidden_dim must be >= 0 (0: the backbone's feature width), got {self.projector_hidden_dim}"
            )
        check_choice("projector_bn", self.projector_bn, PROJECTOR_BN)
        check_choice("predictor_bn", self.predictor_bn, PREDICTOR_BN)
        # heads_bn=false is the older spelling of none for both; a variant other than the default says otherwise.
        if not self.heads_bn and (
            self.projector_bn not in ("all", "none") or self.predictor_bn not in ("hidden", "none")
        ):
            raise ValueError(
                f"heads_bn=false (no BatchNorm in the heads) contradicts projector_bn={self.projector_bn} "
                f"predictor_bn={self.predictor_bn}: drop heads_bn=false, or set both to none"
            )

    def head_bn(self):
        """(projector_bn, predictor_bn) as the heads build them: heads_bn=False means none for both."""
        if not self.heads_bn:
            return "none", "none"
        return self.projector_bn, self.predictor_bn


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The paper's two-view recipe; every strength and probability adjustable."""

    crop_scale: Tuple[float, float] = (0.2, 1.0)
    jitter_strength: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    flip_prob: float = 0.5
    # A random affine transform of each crop (simsiam_tf.affine); all zero: none.
    affine_translate: float = 0.0
    affine_rotate_deg: float = 0.0
    affine_scale: Tuple[float, float] = (1.0, 1.0)
    affine_shear_deg: float = 0.0

    def validate(self):
        _check_crop_scale(self.crop_scale)
        _check_jitter_strength(self.jitter_strength)
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        _check_affine(self)


def _check_affine(a):
    if not 0.0 <= a.affine_translate < 0.5:
        raise ValueError(f"affine_translate must be a fraction of the image in [0, 0.5), got {a.affine_translate}")
    if not 0.0 <= a.affine_rotate_deg <= 180.0:
        raise ValueError(f"affine_rotate_deg must be in [0, 180] degrees, got {a.affine_rotate_deg}")
    if not 0.0 <= a.affine_shear_deg < 90.0:
        raise ValueError(f"affine_shear_deg must be in [0, 90) degrees, got {a.affine_shear_deg}")
    scale = tuple(a.affine_scale)
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1]:
        raise ValueError(f"affine_scale must be min,max with 0 < min <= max (e.g. 0.9,1.1), got {scale}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """A SimSiam (or SimTriplet) pretraining run. The defaults are the embedded demo
    (flags/demo.cfg); the paper's recipes are in flags/cifar10_resnet18.cfg and
    flags/imagenet_resnet50.cfg."""

    runtime: RuntimeConfig = RuntimeConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    method: str = "simsiam"
    batch_size: int = 128
    epochs: int = 4
    train_steps: Optional[int] = None
    base_lr: float = 0.3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    lr_schedule: str = "step"
    fix_pred_lr: bool = False
    fixed_random_predictor: bool = False
    checkpoint_every_steps: int = 100
    log_every_steps: int = 10
    knn_every: int = 0
    knn_k: int = 200
    knn_temperature: float = 0.1
    on_collapse: str = "stop"
    collapse_threshold: float = 0.3
    collapse_patience: int = 3
    init_from: Optional[str] = None
    evaluate: bool = True
    probe_epochs: int = 30
    export: bool = True
    tile_pattern: str = TILE_PATTERN
    neighbourhood: str = "4"
    tile_on_mismatch: str = "error"
    tiles_per_side: int = 4
    augment_on: str = "auto"
    data_service: Optional[str] = None

    def validate(self):
        self.runtime.validate()
        self.data.validate()
        self.model.validate()
        self.augment.validate()
        check_choice("method", self.method, METHODS)
        check_choice("neighbourhood", self.neighbourhood, NEIGHBOURHOODS)
        check_choice("tile_on_mismatch", self.tile_on_mismatch, ON_BAD_FILE)
        if self.tiles_per_side < 1:
            raise ValueError(f"tiles_per_side must be positive, got {self.tiles_per_side}")
        if self.method == "simtriplet":
            if self.data.dataset not in TILE_DATASETS:
                raise ValueError(
                    f"method=simtriplet needs tiles with neighbours: dataset synthetic_tiles, or folder with file "
                    f"names matching tile_pattern; got dataset={self.data.dataset!r}"
                )
            _check_tile_pattern(self.tile_pattern, self.neighbourhood)
        check_choice("on_collapse", self.on_collapse, COLLAPSE_ACTIONS)
        _check_input_placement(self)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (BatchNorm needs a batch), got {self.batch_size}")
        _check_sgd(self)
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"train_steps must be at least 1, got {self.train_steps}")
        # With train_steps the epochs follow from the training set's size (epochs_for_steps), checked then.
        epochs = math.inf if self.train_steps is not None else self.epochs
        if not (math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs < epochs):
            raise ValueError(
                f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} with epochs={self.epochs}"
            )
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_schedule == "epoch" and self.warmup_epochs != int(self.warmup_epochs):
            raise ValueError(
                f"lr_schedule=epoch sets the rate once per epoch, so the warmup must be whole epochs; got "
                f"warmup_epochs={self.warmup_epochs}: round it, or use lr_schedule=step"
            )
        _check_cadence(self)
        if self.knn_every < 0:
            raise ValueError(f"knn_every must be >= 0 (0 turns the kNN monitor off), got {self.knn_every}")
        _check_evaluation(self)
        n = self.data.num_train_examples
        if (
            n is not None
            and self.batch_size > n
            and self.method == "simsiam"
            and self.data.dataset != "synthetic_tiles"
        ):
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the training set (num_train_examples={n}): lower "
                "batch_size or use more examples"
            )
        if self.fixed_random_predictor and not self.model.use_predictor:
            raise ValueError("fixed_random_predictor needs a predictor: drop use_predictor=False")
        if self.fix_pred_lr and not self.model.use_predictor:
            raise ValueError("fix_pred_lr needs a predictor: drop use_predictor=False")
        return self


def _check_input_placement(config):
    check_choice("augment_on", config.augment_on, AUGMENT_ON)
    if config.augment_on == "device" and config.method == "simtriplet":
        raise ValueError("augment_on=device supports method=simsiam only; use augment_on=host (or auto) for simtriplet")
    address = config.data_service
    if address is not None and config.method == "simtriplet":
        raise ValueError("data_service supports method=simsiam only; drop --data_service for simtriplet")
    if address is not None and (
        not address.startswith(DATA_SERVICE_SCHEME) or ":" not in address[len(DATA_SERVICE_SCHEME) :]
    ):
        raise ValueError(
            f"data_service must be the dispatcher's address as grpc://HOST:PORT (e.g. grpc://10.0.0.5:5050), got {address!r}"
        )


def _check_tile_pattern(pattern, neighbourhood):
    import re

    try:
        groups = re.compile(pattern).groupindex
    except re.error as err:
        raise ValueError(f"tile_pattern {pattern!r} is not a valid regular expression: {err}") from None
    needed = ("group",) if neighbourhood == "group" else ("group", "col", "row")
    missing = [name for name in needed if name not in groups]
    if missing:
        raise ValueError(
            f"tile_pattern {pattern!r} lacks the named group(s) {', '.join(missing)}: write them as "
            "(?P<group>...), (?P<col>\\d+), (?P<row>\\d+) (neighbourhood=group needs only (?P<group>...))"
        )


def _check_sgd(config):
    """The settings PretrainConfig and LinearConfig share: epochs, base_lr, weight_decay, momentum."""
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    check_number("base_lr", config.base_lr, low=0, low_open=True)
    check_number("weight_decay", config.weight_decay, low=0)
    check_number("momentum", config.momentum, low=0, high=1, high_open=True)


def _check_evaluation(config):
    """kNN, probe and collapse-monitor settings: checked before training, not when the evaluation starts."""
    if config.knn_k < 1:
        raise ValueError(f"knn_k must be at least 1 (neighbours of the kNN vote), got {config.knn_k}")
    check_number("knn_temperature", config.knn_temperature, low=0, low_open=True)
    if config.probe_epochs < 1:
        raise ValueError(f"probe_epochs must be at least 1, got {config.probe_epochs}")
    if config.collapse_patience < 1:
        raise ValueError(f"collapse_patience must be at least 1 (consecutive checks), got {config.collapse_patience}")
    check_number("collapse_threshold", config.collapse_threshold, low=0, high=1)


def _check_crop_scale(crop_scale):
    if len(crop_scale) != 2:
        raise ValueError(f"crop_scale must be 2 numbers min,max, got {crop_scale}")
    lo, hi = crop_scale
    if not 0 < lo <= hi <= 1:  # also false for NaN
        raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")


def _check_jitter_strength(strength):
    if len(strength) != 4 or not all(math.isfinite(s) and s >= 0 for s in strength):
        raise ValueError(
            "jitter_strength must be 4 finite non-negative numbers brightness,contrast,saturation,hue; "
            f"got {tuple(strength)}"
        )
    if strength[3] > 0.5:
        raise ValueError(
            f"jitter_strength hue must be at most 0.5 (half a turn of the colour wheel), got {strength[3]}"
        )


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """`value` when it is a finite number within the bounds, else a ValueError naming `name` and the range."""
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    return value


def _check_cadence(config):
    if config.checkpoint_every_steps < 1 or config.log_every_steps < 1:
        raise ValueError("checkpoint_every_steps and log_every_steps must be positive")


def check_choice(name, value, choices):
    """`value` when it is one of `choices`, else a ValueError naming them all."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def replace(config, **changes):
    """`dataclasses.replace` that also reaches into nested sections: replace(c, **{"data.image_size": 16})."""
    nested = {}
    flat = {}
    for key, value in changes.items():
        if "." in key:
            section, field = key.split(".", 1)
            nested.setdefault(section, {})[field] = value
        else:
            flat[key] = value
    for section, fields in nested.items():
        flat[section] = replace(getattr(config, section), **fields)
    return dataclasses.replace(config, **flat)


@dataclasses.dataclass(frozen=True)
class LinearConfig:
    """Linear evaluation of a pretrained encoder: frozen encoder, linear classifier on top.

    The protocol is the reference's (main_lincls.py): base lr 0.1 (lr = base_lr *
    batch_size / 256), no weight decay, 90 epochs; `cache_features` None means: cache
    exactly when `augment` is off. `optimizer`, `batch_size`, `augment` and `standardize`
    left at None are chosen for the training set by `batch_fit.fit_linear_config`: the
    reference's LARS, batch 4096 and random-resized-crop + flip on raw features for a
    large set; on a small one (where batch 4096 leaves fewer than 20 steps per epoch)
    SGD on cached, standardised features and a batch fitted to the set.
    `compare_baselines`: also probe the same encoder at random init and raw pixels.
    """

    runtime: RuntimeConfig = RuntimeConfig(model_dir="outputs/linear")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    init_from: Optional[str] = None
    optimizer: Optional[str] = None
    batch_size: Optional[int] = None
    epochs: int = 90
    base_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "step"
    augment: Optional[bool] = None
    standardize: Optional[bool] = None
    crop_scale: Tuple[float, float] = (0.08, 1.0)
    flip_prob: float = 0.5
    cache_features: Optional[bool] = None
    compare_baselines: bool = True
    compare_random_init: bool = False
    labels_per_class: Optional[int] = None
    label_fraction: Optional[float] = None
    finetune: bool = False
    eval_batch_size: int = 256
    checkpoint_every_steps: int = 500
    log_every_steps: int = 50

    @property
    def cached(self):
        """Whether the classifier trains on features extracted once (no augmentation)."""
        return not self.augment if self.cache_features is None else self.cache_features

    def validate(self):
        self.runtime.validate()
        self.data.validate()
        self.model.validate()
        if not self.init_from:
            raise ValueError(
                "init_from is required: the simsiam-pretrain run directory (or checkpoint prefix) whose encoder is probed"
            )
        if self.cache_features and self.augment:
            raise ValueError(
                "cache_features=true needs augment=false: cached features are extracted once, so the "
                "training crops cannot change from epoch to epoch"
            )
        if self.standardize and (self.augment or self.cache_features is False):
            raise ValueError(
                "standardize=true needs cached features (augment=false): the mean and std are those of the "
                "features extracted once"
            )
        if self.optimizer is not None:
            check_choice("optimizer", self.optimizer, PROBE_OPTIMIZERS)
        _check_label_budget(self)
        if self.finetune:
            _check_finetune(self)
        if (self.batch_size is not None and self.batch_size < 1) or self.eval_batch_size < 1:
            raise ValueError(
                f"batch_size and eval_batch_size must be positive, got {self.batch_size} and {self.eval_batch_size}"
            )
        _check_sgd(self)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_crop_scale(self.crop_scale)
        check_number("flip_prob", self.flip_prob, low=0, high=1)
        _check_cadence(self)
        if _inside(self.init_from, self.runtime.model_dir):
            raise ValueError(
                f"init_from {self.init_from!r} lies in model_dir {self.runtime.model_dir!r}: give the probe its own "
                "model_dir, or its checkpoints would mix with those of the run it evaluates"
            )
        return self


def check_label_budget(labels_per_class, label_fraction):
    """Raises ValueError unless at most one label budget is given and it is in range (see `data.label_budget`)."""
    if labels_per_class is not None and label_fraction is not None:
        raise ValueError("labels_per_class and label_fraction are two ways to set one label budget: give one of them")
    if labels_per_class is not None and labels_per_class < 1:
        raise ValueError(f"labels_per_class must be at least 1, got {labels_per_class}")
    if label_fraction is not None and not 0.0 < label_fraction <= 1.0:
        raise ValueError(f"label_fraction must lie in (0, 1], got {label_fraction}")


def epochs_for_steps(config, steps_per_epoch):
    """`config` (a PretrainConfig) with `epochs` set from `train_steps`: the fewest whole epochs of
    `steps_per_epoch` steps that give at least `train_steps` steps; unchanged without `train_steps`.

    Raises ValueError when the warmup does not fit in the epochs that gives.
    """
    if config.train_steps is None:
        return config
    epochs = max(1, math.ceil(config.train_steps / steps_per_epoch))
    if config.warmup_epochs >= epochs:
        raise ValueError(
            f"warmup_epochs={config.warmup_epochs:g} is not below the {epochs} epoch(s) that train_steps="
            f"{config.train_steps} gives at {steps_per_epoch} steps per epoch: lower --warmup_epochs or raise "
            "--train_steps"
        )
    return dataclasses.replace(config, epochs=epochs)


def _check_label_budget(config):
    check_label_budget(config.labels_per_class, config.label_fraction)


def _check_finetune(config):
    if config.cache_features or config.standardize:
        raise ValueError(
            "finetune=true trains the encoder, so its features change every step: it cannot use cache_features or "
            "standardize; leave them unset"
        )
    if config.augment is False:
        raise ValueError(
            "finetune=true trains on augmented crops (SimCLR/BYOL's protocol): leave augment unset or true"
        )
    if config.optimizer == "lars":
        raise ValueError(
            "finetune=true uses SGD with momentum (SimCLR/BYOL's protocol): set optimizer=sgd or leave it unset"
        )


def _inside(path, directory):
    import os

    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return os.path.commonpath([path, directory]) == directory


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Pair verification: a Siamese twin head on a shared encoder, open-set by default.

    The encoder comes from a SimSiam run (`init_from`) or starts at random; it is
    fine-tuned, or kept as it is with `freeze_encoder`. Evaluation classes are never
    trained on unless `closed_set`; `eval_fraction` and `val_fraction` are described at
    `simsiam_tf.data.pairs.make_pools`. `batch_size` counts pairs (triplets for the triplet
    head); an epoch is `steps_per_epoch` steps of freshly drawn pairs.
    """

    runtime: RuntimeConfig = RuntimeConfig(model_dir="outputs/verify")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    head: str = "contrastive"
    embedding_dim: int = 128
    hidden_dim: int = 512
    normalize_embeddings: bool = True
    margin: float = 1.0
    mining: str = "semi_hard"
    distance: str = "l2"
    freeze_encoder: bool = False
    init_from: Optional[str] = None
    compare_random_init: bool = False
    compare_pixels: bool = True
    closed_set: bool = False
    eval_fraction: float = 0.5
    val_fraction: float = 0.3
    augment: str = "crop_flip"
    crop_fraction: float = 1.0
    batch_size: int = 64
    epochs: int = 10
    steps_per_epoch: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    num_val_pairs: int = 1000
    num_eval_pairs: int = 2000
    num_trials: int = 400
    labels_per_class: Optional[int] = None
    label_fraction: Optional[float] = None
    eval_batch_size: int = 256
    checkpoint_every_steps: int = 500
    log_every_steps: int = 50

    def validate(self):
        self.runtime.validate()
        self.data.validate()
        self.model.validate()
        _check_label_budget(self)
        check_choice("head", self.head, VERIFY_HEADS)
        check_choice("mining", self.mining, MININGS)
        check_choice("distance", self.distance, DISTANCES)
        check_choice("augment", self.augment, VERIFY_AUGMENTS)
        if self.head != "triplet" and self.distance != "l2":
            raise ValueError(
                f"distance={self.distance} applies to the triplet head; the {self.head} head uses the euclidean "
                "distance (distance=l2)"
            )
        if self.embedding_dim < 1 or self.hidden_dim < 1:
            raise ValueError(
                f"embedding_dim and hidden_dim must be positive, got {self.embedding_dim} and {self.hidden_dim}"
            )
        check_number("margin", self.margin, low=0)
        if self.compare_random_init and not self.init_from:
            raise ValueError(
                "compare_random_init compares a pretrained encoder with a random one: set init_from to the "
                "simsiam-pretrain run"
            )
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {self.eval_fraction}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must lie in (0, 1], got {self.crop_fraction}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (a positive and a negative pair), got {self.batch_size}")
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError(
                f"epochs and steps_per_epoch must be positive, got {self.epochs} and {self.steps_per_epoch}"
            )
        check_number("learning_rate", self.learning_rate, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        if self.num_val_pairs < 2 or self.num_eval_pairs < 2:
            raise ValueError("num_val_pairs and num_eval_pairs must be at least 2 (a positive and a negative pair)")
        if self.num_trials < 1 or self.eval_batch_size < 1:
            raise ValueError("num_trials and eval_batch_size must be positive")
        _check_cadence(self)
        if self.init_from and _inside(self.init_from, self.runtime.model_dir):
            raise ValueError(
                f"init_from {self.init_from!r} lies in model_dir {self.runtime.model_dir!r}: give the verifier its "
                "own model_dir, or its checkpoints would mix with those of the run it starts from"
            )
        return self


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Export of a finished run: its SavedModel and `.keras` file.

    `output_dir` None means `<model_dir>/export`; `kind` None means: read it from the
    run's flags.cfg.
    """

    model_dir: str = "outputs/demo"
    output_dir: Optional[str] = None
    kind: Optional[str] = None

    def validate(self):
        if not self.model_dir:
            raise ValueError("model_dir is required: the run directory to export")
        if self.output_dir is not None and not self.output_dir:
            raise ValueError("output_dir is empty: name a directory, or leave it out for <model_dir>/export")
        if self.kind is not None:
            check_choice("kind", self.kind, EXPORT_KINDS)
        return self
