"""The pretraining job's settings (SimSiam or SimTriplet) and the rules between them."""

import dataclasses
import math
import re
from typing import Optional

from simsiam_tf.config import choices as c
from simsiam_tf.config import sections as s
from simsiam_tf.config.fields import check_settings, section, setting


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """A SimSiam (or SimTriplet) pretraining run. The defaults are the embedded demo
    (flags/demo.cfg); the paper's recipes are in flags/cifar10_resnet18.cfg and
    flags/imagenet_resnet50.cfg."""

    runtime: s.RuntimeConfig = section(s.RuntimeConfig(), "run")
    data: s.DataConfig = section(s.DataConfig(), "data")
    model: s.ModelConfig = section(s.ModelConfig(), "model")
    augment: s.AugmentConfig = section(s.AugmentConfig(), "augmentation")
    augment_on: str = setting(
        "auto",
        "Where colour jitter, grayscale and blur run: host (in the tf.data pipeline), device (inside the "
        "compiled train step; the host only cuts uint8 crops), auto (device when a GPU or TPU is present).",
        group="augmentation",
        choices=c.AUGMENT_ON,
    )
    data_service: Optional[str] = setting(
        None,
        "grpc://HOST:PORT of a tf.data service dispatcher: preprocessing runs on its workers "
        "(simsiam-data-worker). Unauthenticated: keep it on a private network.",
        group="augmentation",
    )
    method: str = setting(
        "simsiam",
        "simsiam, or simtriplet (a third view from a neighbouring tile of the same group).",
        group="optimisation",
        choices=c.METHODS,
        defines_variables=True,
    )
    batch_size: int = setting(
        64, "Global batch size (split across replicas).", group="optimisation", low=2, why="BatchNorm needs a batch"
    )
    epochs: int = setting(4, "Training epochs (see --train_steps).", group="optimisation", low=1)
    train_steps: Optional[int] = setting(
        None,
        "Train the fewest whole epochs that give at least this many steps, whatever the size of the training "
        "set (replaces --epochs); the small-image recipe counts steps so that one file serves a few thousand "
        "and tens of thousands of images.",
        group="optimisation",
        low=1,
    )
    base_lr: float = s.BASE_LR.field(1.5)
    weight_decay: float = setting(5e-4, "Coupled L2 weight decay (PyTorch SGD semantics).", group="optimisation", low=0)
    momentum: float = s.MOMENTUM.field(0.9)
    warmup_epochs: float = setting(
        0.0,
        "Linear warmup before the cosine decay, in epochs (whole epochs with --lr_schedule=epoch).",
        group="optimisation",
    )
    lr_schedule: str = s.LR_SCHEDULE.field("step")
    fix_pred_lr: bool = setting(False, "Keep the predictor at the initial learning rate.", group="optimisation")
    fixed_random_predictor: bool = setting(
        False, "Never update the predictor (Table 1b ablation).", group="optimisation"
    )
    checkpoint_every_steps: int = s.CHECKPOINT_EVERY.field(100)
    log_every_steps: int = s.LOG_EVERY.field(10)
    knn_every: int = setting(
        0, "kNN accuracy every N epochs (0: off).", group="evaluation", low=0, why="0 turns the kNN monitor off"
    )
    knn_k: int = setting(
        200, "Neighbours for the kNN monitor.", group="evaluation", low=1, why="neighbours of the kNN vote"
    )
    knn_temperature: float = setting(
        0.1, "Temperature of the weighted kNN vote.", group="evaluation", low=0, low_open=True
    )
    on_collapse: str = setting(
        "stop",
        "When the normalised z-std stays under --collapse_threshold: stop (exit code 3), warn, or ignore.",
        group="evaluation",
        choices=c.COLLAPSE_ACTIONS,
    )
    collapse_threshold: float = setting(
        0.3,
        "Normalised z-std under which a check counts as collapsed. Healthy runs stay near 1; a "
        "collapsed one cannot go below about 2/sqrt(per-replica batch), because the projector's "
        "last BatchNorm centres every channel over the batch.",
        group="evaluation",
        low=0,
        high=1,
    )
    collapse_patience: int = setting(
        3, "Consecutive collapsed checks before the alarm.", group="evaluation", low=1, why="consecutive checks"
    )
    spectrum_every_steps: int = setting(
        50,
        "Every N steps: centre share, residual correlation, effective rank and singular values of the backbone "
        "features and the projector output on a fixed set of images (0: off).",
        group="evaluation",
        low=0,
        why="0 turns the spectrum monitor off",
    )
    spectrum_images: int = setting(
        512,
        "Images of the spectrum monitor's fixed set: the test split's when there is one, else the training "
        "set's, with the evaluation preprocessing.",
        group="evaluation",
        low=2,
        why="a spectrum needs two embeddings",
    )
    rank_collapse_fraction: float = setting(
        0.02,
        "Dimensional-collapse alarm: the projector output's effective rank under this fraction of "
        "min(--spectrum_images, --dim) for --collapse_patience consecutive spectrum checks acts as "
        "--on_collapse says (0: off).",
        group="evaluation",
        low=0,
        high=1,
    )
    keep_best: str = setting(
        "latest",
        "Which weights are exported: latest (the end of training), or rank (the checkpoint whose projector "
        "output had the highest effective rank on the spectrum set: a label-free choice; the end-of-run "
        "evaluation then scores it too). On short runs on small images the rank falls as the encoder learns "
        'and rank keeps the first checkpoint: see the docs\' "Seeing collapse coming" before using it.',
        group="evaluation",
        choices=c.KEEP_BEST,
    )
    init_from: Optional[str] = setting(
        None,
        "Initialise weights (only) from this run directory or checkpoint when the run has no checkpoint; or from a "
        ".weights.h5 file of the backbone alone (encoder.save_weights), the heads starting fresh.",
        group="model",
    )
    evaluate: bool = setting(
        True,
        "At the end: kNN and linear-probe accuracy of the encoder and of the same encoder at random init.",
        group="evaluation",
    )
    probe_epochs: int = setting(30, "Epochs of the quick cached-feature linear probe.", group="evaluation", low=1)
    export: bool = setting(True, "Export a SavedModel and a .keras file at the end.", group="run")
    tile_pattern: str = setting(
        c.TILE_PATTERN,
        "Regular expression for tile file names (--dataset=folder): named groups group (the whole "
        "image), col and row; e.g. slide7_x3_y12.png.",
        group="data",
    )
    neighbourhood: str = setting(
        "4",
        "Neighbours for --method=simtriplet: 4 or 8 adjacent tiles, or group (any tile of the same image).",
        group="data",
        choices=c.NEIGHBOURHOODS,
    )
    tile_on_mismatch: str = setting(
        "error",
        "File names that do not match --tile_pattern: stop with an error, or use them without neighbours.",
        group="data",
        choices=c.ON_BAD_FILE,
    )
    tiles_per_side: int = setting(
        4, "--dataset=synthetic_tiles: each whole synthetic image is a grid of N x N tiles.", group="data", low=1
    )

    def validate(self):
        self.runtime.validate()
        self.data.validate()
        self.model.validate()
        self.augment.validate()
        check_settings(self)
        if self.method == "simtriplet":
            if self.data.dataset not in c.TILE_DATASETS:
                raise ValueError(
                    f"method=simtriplet needs tiles with neighbours: dataset synthetic_tiles, or folder with file "
                    f"names matching tile_pattern; got dataset={self.data.dataset!r}"
                )
            _check_tile_pattern(self.tile_pattern, self.neighbourhood)
        _check_input_placement(self)
        # With train_steps the epochs follow from the training set's size (epochs_for_steps), checked then.
        epochs = math.inf if self.train_steps is not None else self.epochs
        if not (math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs < epochs):
            raise ValueError(
                f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} with epochs={self.epochs}"
            )
        if self.lr_schedule == "epoch" and self.warmup_epochs != int(self.warmup_epochs):
            raise ValueError(
                f"lr_schedule=epoch sets the rate once per epoch, so the warmup must be whole epochs; got "
                f"warmup_epochs={self.warmup_epochs}: round it, or use lr_schedule=step"
            )
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
        if self.keep_best == "rank" and not self.spectrum_every_steps:
            raise ValueError("keep_best=rank reads the spectrum monitor: set spectrum_every_steps > 0")
        if self.fixed_random_predictor and not self.model.use_predictor:
            raise ValueError("fixed_random_predictor needs a predictor: drop use_predictor=False")
        if self.fix_pred_lr and not self.model.use_predictor:
            raise ValueError("fix_pred_lr needs a predictor: drop use_predictor=False")
        return self


def _check_input_placement(config):
    if config.augment_on == "device" and config.method == "simtriplet":
        raise ValueError("augment_on=device supports method=simsiam only; use augment_on=host (or auto) for simtriplet")
    address = config.data_service
    if address is not None and config.method == "simtriplet":
        raise ValueError("data_service supports method=simsiam only; drop --data_service for simtriplet")
    scheme = c.DATA_SERVICE_SCHEME
    if address is not None and (not address.startswith(scheme) or ":" not in address[len(scheme) :]):
        raise ValueError(
            f"data_service must be the dispatcher's address as grpc://HOST:PORT (e.g. grpc://10.0.0.5:5050), got {address!r}"
        )


def _check_tile_pattern(pattern, neighbourhood):
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
