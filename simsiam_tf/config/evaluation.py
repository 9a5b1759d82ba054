"""The settings of the jobs that evaluate an encoder on labels: the linear probe and pair verification."""

import dataclasses
import os
from typing import ClassVar, Optional, Tuple

from simsiam_tf.config import choices as c
from simsiam_tf.config import sections as s
from simsiam_tf.config.fields import check_settings, section, setting

# The encoder settings of a job that starts from a pretraining run: rebuilt as it was trained.
ENCODER_FLAGS = ("backbone", "width_multiplier", "sync_bn", "backbone_weights", "bn_convention", "input_colour")

# What rebuilds a run's encoder, and the hold-out its evaluation must use: taken from the --init_from run.
ENCODER_FROM_RUN = ("backbone", "width_multiplier", "backbone_weights", "bn_convention", "input_colour")
HOLDOUT_FROM_RUN = ("holdout_fraction", "holdout_seed")


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

    # Settings the tool takes from the flags.cfg of the --init_from run unless given.
    INHERITED_FROM_RUN: ClassVar[tuple] = (
        "dataset",
        "data_dir",
        "image_size",
        "train_split",
        "eval_split",
        "num_train_examples",
        "num_eval_examples",
        "on_corrupt",
        "max_image_pixels",
        *HOLDOUT_FROM_RUN,
        "seed",
        *ENCODER_FROM_RUN,
        "flip_prob",
    )

    runtime: s.RuntimeConfig = section(s.RuntimeConfig(model_dir="outputs/linear"), "run")
    data: s.DataConfig = section(s.DataConfig(), "data")
    model: s.ModelConfig = section(s.ModelConfig(), "model", flags=ENCODER_FLAGS)
    init_from: Optional[str] = setting(
        None,
        "Required: the simsiam-pretrain run directory (its latest checkpoint) or a checkpoint prefix. Its "
        "flags.cfg gives the defaults of the data and encoder flags.",
        group="model",
    )
    optimizer: Optional[str] = setting(
        None,
        "lars (trust 0.001) or sgd (coupled L2, PyTorch semantics). Default: lars, or sgd on a small "
        "training set (where batch 4096 leaves fewer than 20 steps per epoch).",
        group="optimisation",
        choices=c.PROBE_OPTIMIZERS,
    )
    batch_size: Optional[int] = setting(
        None,
        "Global batch size of the classifier's training. Default: 4096, halved (to a power of two >= 16) "
        "until an epoch has at least 20 steps; a batch given here is kept, with a warning when too large.",
        group="optimisation",
        low=1,
    )
    epochs: int = s.EPOCHS.field(90)
    base_lr: float = s.BASE_LR.field(0.1)
    momentum: float = s.MOMENTUM.field(0.9)
    weight_decay: float = setting(
        0.0, "Weight decay (LARS: on the weights only; sgd: coupled L2).", group="optimisation", low=0
    )
    lr_schedule: str = s.LR_SCHEDULE.field("step")
    augment: Optional[bool] = setting(
        None,
        "Random-resized-crop + flip training images (the paper); false: the evaluation preprocessing. "
        "Default: true, or false on a small training set.",
        group="augmentation",
    )
    standardize: Optional[bool] = setting(
        None,
        "Train the classifier on cached features scaled to zero mean and unit variance (train statistics, "
        "folded into the stored classifier). Default: false (the paper), or true on a small training set.",
        group="optimisation",
    )
    crop_scale: Tuple[float, float] = s.CROP_SCALE.field((0.08, 1.0))
    flip_prob: float = s.FLIP_PROB.field(0.5)
    cache_features: Optional[bool] = setting(
        None,
        "Extract the features once and train the classifier on them; default: true exactly when "
        "--augment=false. Needs --augment=false.",
        group="optimisation",
    )
    compare_baselines: bool = setting(
        True,
        "Also train the same probe on the encoder at random init and on raw pixels (flattened, standardised "
        "images at --image_size), written as random_init_top1/top5 and pixels_top1/top5.",
        group="evaluation",
    )
    compare_random_init: bool = setting(
        False,
        "Also probe the same architecture at random init (implied by --compare_baselines).",
        group="evaluation",
    )
    labels_per_class: Optional[int] = s.LABELS_PER_CLASS.field(None)
    label_fraction: Optional[float] = s.LABEL_FRACTION.field(None)
    finetune: bool = setting(
        False,
        "Fine-tune the whole encoder with the classifier (semi-supervised evaluation as SimCLR/BYOL, "
        "usually with a label budget): augmented crops, BatchNorm in training mode, SGD momentum "
        "--momentum without weight decay, one lr for all (SimCLR's base lr is 0.05). The check that "
        "the encoder is unchanged is skipped.",
        group="evaluation",
    )
    eval_batch_size: int = s.EVAL_BATCH_SIZE.field(256)
    checkpoint_every_steps: int = s.CHECKPOINT_EVERY.field(500)
    log_every_steps: int = s.LOG_EVERY.field(50)

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
        check_label_budget(self.labels_per_class, self.label_fraction)
        if self.finetune:
            _check_finetune(self)
        check_settings(self)
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
    check_settings(_LabelBudget(labels_per_class, label_fraction))


@dataclasses.dataclass(frozen=True)
class _LabelBudget:
    labels_per_class: Optional[int] = s.LABELS_PER_CLASS.field(None)
    label_fraction: Optional[float] = s.LABEL_FRACTION.field(None)


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
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return os.path.commonpath([path, directory]) == directory


PAIRS_WHY = "a positive and a negative pair"


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Pair verification: a Siamese twin head on a shared encoder, open-set by default.

    The encoder comes from a SimSiam run (`init_from`) or starts at random; it is
    fine-tuned, or kept as it is with `freeze_encoder`. Evaluation classes are never
    trained on unless `closed_set`; `eval_fraction` and `val_fraction` are described at
    `simsiam_tf.data.pairs.make_pools`. `batch_size` counts pairs (triplets for the triplet
    head); an epoch is `steps_per_epoch` steps of freshly drawn pairs.
    """

    # Settings the tool takes from the flags.cfg of the --init_from run unless given.
    INHERITED_FROM_RUN: ClassVar[tuple] = (*ENCODER_FROM_RUN, *HOLDOUT_FROM_RUN)

    runtime: s.RuntimeConfig = section(s.RuntimeConfig(model_dir="outputs/verify"), "run")
    data: s.DataConfig = section(s.DataConfig(), "data")
    model: s.ModelConfig = section(s.ModelConfig(), "model", flags=ENCODER_FLAGS)
    init_from: Optional[str] = setting(
        None,
        "simsiam-pretrain run directory (or checkpoint) whose encoder starts the verifier; empty: random init.",
        group="model",
    )
    freeze_encoder: bool = setting(
        False,
        "Keep the encoder fixed (weights and BatchNorm statistics) and train only the head.",
        group="model",
    )
    head: str = setting(
        "contrastive",
        "contrastive (loss on the euclidean distance), triplet (in-batch mining), classifier "
        "(MLP on [|e1-e2|, e1*e2], binary cross-entropy), or cosine (no head: the cosine of the encoder's "
        "features; with --freeze_encoder nothing is trained, the few-label choice for unseen classes).",
        group="model",
        choices=c.VERIFY_HEADS,
        defines_variables=True,
    )
    embedding_dim: int = setting(
        128, "Width of the embedding the head compares.", group="model", low=1, defines_variables=True
    )
    hidden_dim: int = setting(
        512,
        "Hidden width of the embedding head and of the classifier MLP.",
        group="model",
        low=1,
        defines_variables=True,
    )
    normalize_embeddings: bool = setting(True, "l2-normalise the embeddings.", group="model")
    margin: float = setting(1.0, "Margin of the contrastive and triplet losses.", group="model", low=0)
    mining: str = setting(
        "semi_hard",
        "Triplet mining in the batch: semi_hard (FaceNet) or batch_hard (Hermans et al.).",
        group="model",
        choices=c.MININGS,
    )
    distance: str = setting(
        "l2",
        "Distance of the triplet head (the contrastive head uses l2).",
        group="model",
        choices=c.DISTANCES,
    )
    compare_random_init: bool = setting(
        False,
        "Also train the same head on a random-init encoder (in model_dir/random_init) and report its figures.",
        group="evaluation",
    )
    compare_pixels: bool = setting(
        True,
        "Also score the evaluation pairs by the cosine similarity of their standardised raw pixels (no "
        "training) and report its figures as pixels_*; the output warns when the encoder does no better.",
        group="evaluation",
    )
    closed_set: bool = setting(
        False,
        "Evaluate on classes seen in training (images held out per class) instead of unseen classes.",
        group="evaluation",
    )
    eval_fraction: float = setting(
        0.5,
        "Open set: share of the classes held out for evaluation (unless the splits already have "
        "disjoint classes); closed set on one split: share of each class's images held out.",
        group="evaluation",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
        what="lie in",
    )
    val_fraction: float = setting(
        0.3,
        "Share of each evaluation class's images used for the validation pairs that set the threshold.",
        group="evaluation",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
        what="lie in",
    )
    augment: str = setting(
        "crop_flip",
        "Training-pair augmentation: none, random resized crop, or crop and horizontal flip.",
        group="data",
        choices=c.VERIFY_AUGMENTS,
    )
    crop_fraction: float = setting(
        1.0,
        "Keep the central fraction of each image side before resizing (training and evaluation), "
        "for subjects that fill only the middle (LFW faces).",
        group="data",
        low=0,
        low_open=True,
        high=1,
        what="lie in",
    )
    batch_size: int = setting(
        64, "Pairs per batch (triplets for the triplet head).", group="optimisation", low=2, why=PAIRS_WHY
    )
    epochs: int = s.EPOCHS.field(10)
    steps_per_epoch: int = setting(
        100, "Steps per epoch (pairs are drawn afresh each step).", group="optimisation", low=1
    )
    learning_rate: float = setting(
        1e-3, "AdamW learning rate (cosine decay to 0).", group="optimisation", low=0, low_open=True
    )
    weight_decay: float = setting(1e-4, "AdamW decoupled weight decay.", group="optimisation", low=0)
    num_val_pairs: int = setting(
        1000, "Validation pairs (half positive) for the threshold.", group="evaluation", low=2, why=PAIRS_WHY
    )
    num_eval_pairs: int = setting(2000, "Evaluation pairs (half positive).", group="evaluation", low=2, why=PAIRS_WHY)
    num_trials: int = setting(400, "N-way one-shot trials for each of N = 5 and 20.", group="evaluation", low=1)
    labels_per_class: Optional[int] = s.LABELS_PER_CLASS.field(None)
    label_fraction: Optional[float] = s.LABEL_FRACTION.field(None)
    eval_batch_size: int = s.EVAL_BATCH_SIZE.field(256)
    checkpoint_every_steps: int = s.CHECKPOINT_EVERY.field(500)
    log_every_steps: int = s.LOG_EVERY.field(50)

    def validate(self):
        self.runtime.validate()
        self.data.validate()
        self.model.validate()
        check_label_budget(self.labels_per_class, self.label_fraction)
        check_settings(self)
        if self.head != "triplet" and self.distance != "l2":
            raise ValueError(
                f"distance={self.distance} applies to the triplet head; the {self.head} head uses the euclidean "
                "distance (distance=l2)"
            )
        if self.compare_random_init and not self.init_from:
            raise ValueError(
                "compare_random_init compares a pretrained encoder with a random one: set init_from to the "
                "simsiam-pretrain run"
            )
        if self.init_from and _inside(self.init_from, self.runtime.model_dir):
            raise ValueError(
                f"init_from {self.init_from!r} lies in model_dir {self.runtime.model_dir!r}: give the verifier its "
                "own model_dir, or its checkpoints would mix with those of the run it starts from"
            )
        return self
