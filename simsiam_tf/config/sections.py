"""The sections every job shares: where it runs, which images, which encoder and heads, which augmentation."""

import dataclasses
import math
from typing import Optional, Tuple, Union

from simsiam_tf.config import backbone_names
from simsiam_tf.config import choices as c
from simsiam_tf.config.fields import PROBABILITY, Setting, check_settings, probability, setting


def check_verbose(value):
    """Keras' verbosity 0, 1 or 2 (as a number or its string), or "auto"."""
    if str(value) not in c.VERBOSITY:
        raise ValueError(f"verbose must be auto, 0, 1 or 2, got {value!r}")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a job runs: devices, numerics, logging cadence."""

    model_dir: str = setting(
        "outputs/demo",
        "Run directory: flags.cfg, checkpoints/, logs/ (TensorBoard), metrics.json. A run whose "
        "directory holds a checkpoint resumes from it.",
    )
    seed: int = setting(0, "Seed for weights, data order and augmentation.", low=0)
    strategy: str = setting(
        "auto",
        "tf.distribute strategy; auto = mirrored when more than one GPU is visible, else default.",
        choices=c.STRATEGIES,
    )
    tpu: Optional[str] = setting(None, "TPU address or name for --strategy=tpu ('local' for a TPU VM).")
    precision: str = setting(
        "float32",
        "Numeric precision of the model: float32, mixed_bfloat16 (TPUs, A100/H100 GPUs, CPUs with native "
        "bfloat16: avx512_bf16 or AMX; emulated and several times slower elsewhere, with a warning) or "
        "mixed_float16 (GPUs).",
        choices=c.PRECISIONS,
    )
    jit_compile: bool = setting(False, "Compile the train step with XLA.")
    deterministic: bool = setting(
        False,
        "TensorFlow's op determinism (tf.config.experimental.enable_op_determinism) and seeds from --seed: a run "
        "killed at any step and resumed ends with the weights of the same run uninterrupted, bit for bit. Costs "
        "speed (docs/tools.md#resuming); process-wide once on. Without it a resumed run still sees the same batches.",
    )
    verbose: Union[int, str] = setting(
        "auto",
        "Progress output: 0 silent, 1 progress bar, 2 one line per epoch; auto = 1 on a terminal or in a "
        "notebook, 2 when the output goes to a file (a scheduler's log).",
        check=check_verbose,
    )

    def validate(self):
        check_settings(self)
        if self.strategy == "tpu" and not self.tpu:
            raise ValueError(
                "strategy='tpu' needs the TPU address: set tpu (e.g. --tpu=grpc://10.0.0.2:8470 or --tpu=local)"
            )


# Above the largest photographs in common use (200 MP phone sensors, 102 MP medium format) and
# far below a 30,000 x 30,000 bomb (9e8); one image at the limit decodes to 750 MB of uint8 RGB.
DEFAULT_MAX_IMAGE_PIXELS = 250_000_000


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images: an embedded synthetic set, a TFDS name, or a folder."""

    dataset: str = setting(
        "synthetic_scenes",
        "'synthetic_scenes' (embedded, no download: patterned objects in clutter, the demo's set), 'synthetic' "
        "(embedded: the patterns filling their images, the ablations' set), a TFDS name (e.g. cifar10, "
        "imagenet2012), or 'folder'.",
    )
    data_dir: Optional[str] = setting(
        None, "TFDS data directory, or for --dataset=folder the image folder (class sub-folders or flat)."
    )
    image_size: int = setting(32, "Side of the square training images in pixels.", low=8, why="pixels")
    train_split: str = setting("train", "Split used for training.")
    eval_split: str = setting("test", "Split used for kNN/probe evaluation.")
    num_train_examples: Optional[int] = setting(
        None, "Use only this many training images (synthetic: how many to generate).", low=1
    )
    num_eval_examples: Optional[int] = setting(None, "Use only this many evaluation images.", low=1)
    on_corrupt: str = setting(
        "error",
        "What to do with image files that cannot be used (truncated or damaged, empty, not an image, over "
        "--max_image_pixels, not a regular file): stop at the first with an error naming it, or skip them all "
        "with a count by reason.",
        choices=c.ON_BAD_FILE,
    )
    max_image_pixels: int = setting(
        DEFAULT_MAX_IMAGE_PIXELS,
        "Image files whose header declares more pixels (width x height) are refused before decoding (a "
        "decompression bomb; --on_corrupt says whether to stop or skip). The default is above the largest "
        "camera photographs (200 MP) and decodes to at most 750 MB.",
        low=1,
    )
    holdout_fraction: float = setting(
        0.1,
        "A labelled folder without train/ and test/ sub-folders: the fraction of each class's images held out "
        "for evaluation (seeded, stratified; pretraining never sees them; 0 = none, evaluation on the training "
        "images).",
        low=0,
        high=1,
        high_open=True,
    )
    holdout_seed: int = setting(
        0, "Seed of that hold-out (apart from --seed, so that runs with other seeds share one held-out split).", low=0
    )

    def validate(self):
        check_settings(self)
        if self.dataset == "folder" and not self.data_dir:
            raise ValueError(
                "dataset='folder' needs data_dir pointing at a folder of images (class sub-folders or flat)"
            )


check_backbone = backbone_names.check_backbone


# Settings the jobs share with the same meaning; each job gives its own default.
BACKBONE = Setting(
    f"{', '.join(c.BACKBONE_ARCHS)}, suffix {c.CIFAR_SUFFIX} for the CIFAR stem (3x3 conv, no max-pool); or "
    f"{' or '.join(c.SMALL_BACKBONES)}, encoders for 28-64 px images (two downsamplings); or "
    f"{c.KERAS_PREFIX}NAME, a Keras Applications model without its top (e.g. {c.KERAS_PREFIX}EfficientNetV2B0); "
    "or a name registered with simsiam_tf.register_backbone.",
    check=check_backbone,
    defines_variables=True,
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder and SimSiam heads."""

    backbone: str = BACKBONE.field("resnet18_cifar")
    width_multiplier: float = setting(
        0.25, "Scales every ResNet width (1.0 = standard).", low=0, low_open=True, defines_variables=True
    )
    dim: int = setting(512, "Projector output width (the paper: 2048).", low=1, defines_variables=True)
    pred_dim: int = setting(128, "Predictor bottleneck width (the paper: 512).", low=1, defines_variables=True)
    projector_layers: int = setting(
        2,
        "3 (ImageNet recipe) or 2 (CIFAR recipe).",
        choices=c.PROJECTOR_LAYERS,
        choices_text="2 (CIFAR recipe) or 3 (ImageNet recipe)",
        defines_variables=True,
    )
    projector_hidden_dim: int = setting(
        0,
        "Projector hidden width; 0 = the backbone's feature width, as the reference (2048 for ResNet-50).",
        low=0,
        why="0: the backbone's feature width",
        defines_variables=True,
    )
    projector_bn: str = setting(
        "all",
        "BatchNorm in the projector (paper Table 3): all (the reference, 3c), hidden (hidden layers only, 3b), "
        "none (3a).",
        choices=c.PROJECTOR_BN,
        defines_variables=True,
    )
    predictor_bn: str = setting(
        "hidden",
        "BatchNorm in the predictor: hidden (the reference), all (also on its output, Table 3d, unstable), none.",
        choices=c.PREDICTOR_BN,
        defines_variables=True,
    )
    stop_gradient: bool = setting(True, "Stop-gradient on the target branch (off: the collapse ablation).")
    use_predictor: bool = setting(True, "Use the predictor MLP (off: Table 1a ablation).", defines_variables=True)
    heads_bn: bool = setting(
        True,
        "BatchNorm in the projector and predictor; false = --projector_bn=none --predictor_bn=none (Table 3a).",
        defines_variables=True,
    )
    sync_bn: str = setting(
        "auto",
        "Synchronized BatchNorm across replicas; auto = on with more than one replica (no effect on the "
        "numbers of a frozen encoder).",
        choices=c.SYNC_BN,
    )
    backbone_weights: str = setting(
        "none",
        "Initial backbone weights of a new pretraining run (a resumed or --init_from run takes its checkpoint's): "
        "none (random), imagenet (Keras' download and cache, keras: backbones only), or the path of a "
        f"{c.WEIGHTS_SUFFIX} file of the same backbone.",
        check=backbone_names.check_backbone_weights,
    )
    bn_convention: str = setting(
        "model",
        "BatchNorm momentum/epsilon of the backbone: model (its own; the package's encoders already use the "
        "reference's) or reference (PyTorch's 0.1/1e-5, i.e. Keras momentum 0.9, epsilon 1e-5).",
        choices=c.BN_CONVENTIONS,
    )
    input_colour: str = setting(
        "rgb",
        "What the encoder sees of each image: rgb, or luma (its grayscale, ITU-R 601-2, in all three "
        "channels, inside the encoder and so in the export too): for images whose class is their shape and "
        "not their colour, where colour would be the views' easiest match (the package's encoders only).",
        choices=c.INPUT_COLOURS,
        defines_variables=True,
    )

    def validate(self):
        check_settings(self)
        if self.input_colour != "rgb" and backbone_names.backbone_kind(self.backbone) != backbone_names.PACKAGE:
            raise ValueError(
                f"input_colour={self.input_colour} applies to the package's encoders; backbone={self.backbone} "
                "takes images as its own preprocessing expects: use input_colour=rgb"
            )
        if self.backbone_weights == "imagenet" and backbone_names.backbone_kind(self.backbone) != backbone_names.KERAS:
            raise ValueError(
                f"backbone_weights=imagenet needs a Keras Applications backbone ({c.KERAS_PREFIX}NAME), got "
                f"backbone={self.backbone}: use backbone_weights=none or a {c.WEIGHTS_SUFFIX} file"
            )
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


def check_crop_scale(crop_scale):
    if len(crop_scale) != 2:
        raise ValueError(f"crop_scale must be 2 numbers min,max, got {crop_scale}")
    lo, hi = crop_scale
    if not 0 < lo <= hi <= 1:  # also false for NaN
        raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")
    return crop_scale


def check_jitter_strength(strength):
    if len(strength) != 4 or not all(math.isfinite(s) and s >= 0 for s in strength):
        raise ValueError(
            "jitter_strength must be 4 finite non-negative numbers brightness,contrast,saturation,hue; "
            f"got {tuple(strength)}"
        )
    if strength[3] > 0.5:
        raise ValueError(
            f"jitter_strength hue must be at most 0.5 (half a turn of the colour wheel), got {strength[3]}"
        )
    return strength


def check_affine_scale(scale):
    if len(scale) != 2 or not all(math.isfinite(v) for v in scale) or not 0.0 < scale[0] <= scale[1]:
        raise ValueError(f"affine_scale must be min,max with 0 < min <= max (e.g. 0.9,1.1), got {tuple(scale)}")
    return scale


CROP_SCALE = Setting("Random-resized-crop area range: min,max.", group="augmentation", check=check_crop_scale)
FLIP_PROB = Setting(
    "Probability of mirroring a training crop left-right (the paper: 0.5; 0 where mirror images are another "
    "class, e.g. digits and text).",
    group="augmentation",
    low=0,
    high=1,
    what=PROBABILITY,
)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The paper's two-view recipe; every strength and probability adjustable."""

    crop_scale: Tuple[float, float] = CROP_SCALE.field((0.2, 1.0))
    jitter_strength: Tuple[float, float, float, float] = setting(
        (0.4, 0.4, 0.4, 0.1), "Colour jitter brightness,contrast,saturation,hue.", check=check_jitter_strength
    )
    jitter_prob: float = probability(0.8, "Probability of colour jitter.")
    grayscale_prob: float = probability(0.2, "Probability of grayscale.")
    blur_prob: float = probability(0.0, "Probability of Gaussian blur (0 for the CIFAR recipe).")
    flip_prob: float = FLIP_PROB.field(0.5)
    # A random affine transform of each crop (simsiam_tf.augment.affine); all at their defaults: none.
    affine_translate: float = setting(
        0.0,
        "Random shift of each crop, up to this fraction of its size.",
        low=0,
        high=0.5,
        high_open=True,
        what="be a fraction of the image in",
    )
    affine_rotate_deg: float = setting(
        0.0, "Random rotation of each crop, +-degrees.", low=0, high=180, what="be in", why="degrees"
    )
    affine_scale: Tuple[float, float] = setting(
        (1.0, 1.0), "Random zoom of each crop: min,max (1,1: none).", check=check_affine_scale
    )
    affine_shear_deg: float = setting(
        0.0,
        "Random horizontal shear of each crop, +-degrees.",
        low=0,
        high=90,
        high_open=True,
        what="be in",
        why="degrees",
    )

    def validate(self):
        check_settings(self)


# Top-level settings several jobs share with one meaning (each job gives its default).
EPOCHS = Setting("Training epochs.", group="optimisation", low=1)
BASE_LR = Setting(
    "Base learning rate; the rate used is base_lr * batch_size / 256, cosine-decayed to 0.",
    group="optimisation",
    low=0,
    low_open=True,
)
MOMENTUM = Setting("SGD (or LARS) momentum.", group="optimisation", low=0, high=1, high_open=True)
LR_SCHEDULE = Setting(
    "When the cosine learning rate changes: epoch (once at the start of each epoch, as the reference's "
    "adjust_learning_rate; the paper's recipes set it) or step (every step, a smooth curve; the default, with "
    "which the demo's figures were measured).",
    group="optimisation",
    choices=c.LR_SCHEDULES,
)
CHECKPOINT_EVERY = Setting("Checkpoint every N steps (and at the end).", group="run", low=1)
LOG_EVERY = Setting("TensorBoard scalars every N steps.", group="run", low=1)
EVAL_BATCH_SIZE = Setting("Batch size of feature extraction and evaluation.", group="evaluation", low=1)
LABELS_PER_CLASS = Setting(
    "Label budget: train on this many labelled images of each class of the train split (drawn "
    "from --seed; recorded in metrics.json). Exclusive with --label_fraction.",
    group="data",
    low=1,
)
LABEL_FRACTION = Setting(
    "Label budget: train on this fraction (0, 1] of each class's images (rounded, at least 1 per "
    "class; SimCLR/BYOL's 1% and 10% are 0.01 and 0.1). Exclusive with --labels_per_class.",
    group="data",
    low=0,
    low_open=True,
    high=1,
    what="lie in",
)
