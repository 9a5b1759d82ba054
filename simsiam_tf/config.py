"""Frozen configuration dataclasses, one per job.

The command-line tools turn absl flags into these; notebooks and tests build them
directly. Nothing here imports absl or TensorFlow.
"""
import dataclasses
from typing import Optional, Tuple

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
COLLAPSE_ACTIONS = ("stop", "warn", "ignore")
METHODS = ("simsiam", "simtriplet")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a job runs: devices, numerics, logging cadence."""

    model_dir: str = "runs/demo"
    seed: int = 0
    strategy: str = "auto"
    tpu: Optional[str] = None
    precision: str = "float32"
    jit_compile: bool = False
    verbose: int = 1

    def validate(self):
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        if self.strategy == "tpu" and not self.tpu:
            raise ValueError("strategy='tpu' needs the TPU address: set tpu (e.g. --tpu=grpc://10.0.0.2:8470 or --tpu=local)")
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
            raise ValueError("dataset='folder' needs data_dir pointing at a folder of images (class sub-folders or flat)")
        _choice("on_corrupt", self.on_corrupt, ("error", "skip"))
        for name in ("num_train_examples", "num_eval_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder and SimSiam heads."""

    backbone: str = "resnet18_cifar"
    width_multiplier: float = 1.0
    dim: int = 2048
    pred_dim: int = 512
    projector_layers: int = 3
    stop_gradient: bool = True
    use_predictor: bool = True
    heads_bn: bool = True
    sync_bn: str = "auto"

    def validate(self):
        from_names = ("resnet18", "resnet34", "resnet50")
        arch = self.backbone[: -len("_cifar")] if self.backbone.endswith("_cifar") else self.backbone
        if arch not in from_names:
            valid = ", ".join(n + s for n in from_names for s in ("", "_cifar"))
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {valid}")
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {self.width_multiplier}")
        if self.projector_layers not in (2, 3):
            raise ValueError(f"projector_layers must be 2 (CIFAR recipe) or 3 (ImageNet recipe), got {self.projector_layers}")
        if self.dim < 1 or self.pred_dim < 1:
            raise ValueError("dim and pred_dim must be positive")
        _choice("sync_bn", self.sync_bn, ("auto", "true", "false"))


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The paper's two-view recipe; every strength and probability adjustable."""

    crop_scale: Tuple[float, float] = (0.2, 1.0)
    jitter_strength: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    flip_prob: float = 0.5

    def validate(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        for name in ("jitter_prob", "grayscale_prob", "blur_prob", "flip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """A SimSiam (or SimTriplet) pretraining run."""

    runtime: RuntimeConfig = RuntimeConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    method: str = "simsiam"
    batch_size: int = 512
    epochs: int = 800
    base_lr: float = 0.05
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    fix_pred_lr: bool = False
    fixed_random_predictor: bool = False
    checkpoint_every_steps: int = 500
    log_every_steps: int = 50
    knn_every: int = 0
    knn_k: int = 200
    knn_temperature: float = 0.1
    on_collapse: str = "stop"
    collapse_threshold: float = 0.1
    collapse_patience: int = 3
    init_from: Optional[str] = None
    evaluate: bool = False
    probe_epochs: int = 30
    export: bool = False

    def validate(self):
        self.runtime.validate()
        self.data.validate()
        self.model.validate()
        self.augment.validate()
        _choice("method", self.method, METHODS)
        _choice("on_collapse", self.on_collapse, COLLAPSE_ACTIONS)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (BatchNorm needs a batch), got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.base_lr <= 0:
            raise ValueError(f"base_lr must be positive, got {self.base_lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} with epochs={self.epochs}")
        if self.checkpoint_every_steps < 1 or self.log_every_steps < 1:
            raise ValueError("checkpoint_every_steps and log_every_steps must be positive")
        if self.knn_every < 0:
            raise ValueError(f"knn_every must be >= 0 (0 turns the kNN monitor off), got {self.knn_every}")
        if self.fixed_random_predictor and not self.model.use_predictor:
            raise ValueError("fixed_random_predictor needs a predictor: drop use_predictor=False")
        if self.fix_pred_lr and not self.model.use_predictor:
            raise ValueError("fix_pred_lr needs a predictor: drop use_predictor=False")
        return self


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


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
