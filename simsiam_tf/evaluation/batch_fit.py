"""Fitting a recipe's global batch to a small training set.

Recipes written for ImageNet (batch 4096 on 1.28M images: 312 steps per epoch) leave a
few thousand images with one or two steps per epoch, and lr = base_lr * batch / 256
then asks for a large learning rate that the run takes only a handful of steps with.
`fit_batch_size` halves the batch until an epoch has at least `MIN_STEPS_PER_EPOCH`
steps; the learning rate follows through the scaling rule.
"""

import dataclasses
from typing import Optional

# 20 steps per epoch means a batch of at most 5% of the training set. The reference
# recipes sit far above it (ImageNet linear: 312 steps per epoch, CIFAR-10 at batch
# 256: 195), so they are left alone; below it, a 90-epoch run has fewer than 1,800
# steps and each epoch too few updates for the per-epoch cosine schedule to be smooth.
MIN_STEPS_PER_EPOCH = 20
# BatchNorm-free linear probes train at any batch, but below 16 a step is mostly noise
# and the run gets slow on accelerators; 16 is the floor however small the set.
MIN_BATCH_SIZE = 16


@dataclasses.dataclass(frozen=True)
class BatchFit:
    """What `fit_batch_size` decided: the batch to use and the line that says so (None when unchanged)."""

    batch_size: int
    requested: int
    steps_per_epoch: int
    message: Optional[str] = None
    warning: Optional[str] = None

    @property
    def changed(self):
        return self.batch_size != self.requested


def fit_batch_size(batch_size, num_examples, explicit=False, drop_remainder=True, flag="--batch_size"):
    """The batch for `num_examples` training images: `batch_size`, or a smaller power of two when it is too large.

    When `num_examples // batch_size < MIN_STEPS_PER_EPOCH`, the batch becomes the largest
    power of two >= `MIN_BATCH_SIZE` (and below `batch_size`) that gives at least that
    many steps (`MIN_BATCH_SIZE` when none does), and `message` says so. With
    `explicit` (the user chose the batch) it is kept and `warning` names the fix.
    `drop_remainder`: an epoch is the full batches only (else a last smaller one counts).
    """

    def _steps(examples, batch):
        return examples // batch if drop_remainder else -(-examples // batch)

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_examples < 1:
        raise ValueError(f"the training set is empty (num_examples {num_examples})")
    steps = _steps(num_examples, batch_size)
    if steps >= MIN_STEPS_PER_EPOCH or batch_size <= MIN_BATCH_SIZE:
        return BatchFit(batch_size, batch_size, max(steps, 1))
    fitted = MIN_BATCH_SIZE
    candidate = MIN_BATCH_SIZE
    while candidate * 2 < batch_size and _steps(num_examples, candidate * 2) >= MIN_STEPS_PER_EPOCH:
        candidate *= 2
    if _steps(num_examples, candidate) >= MIN_STEPS_PER_EPOCH:
        fitted = candidate
    fitted_steps = max(_steps(num_examples, fitted), 1)
    if explicit:
        warning = (
            f"{flag}={batch_size} leaves {steps} steps per epoch on {num_examples} training images (fewer than "
            f"{MIN_STEPS_PER_EPOCH}); {flag}={fitted} would give {fitted_steps}"
        )
        return BatchFit(batch_size, batch_size, max(steps, 1), warning=warning)
    message = (
        f"batch {batch_size} would leave {steps} steps per epoch on {num_examples} training images; using batch "
        f"{fitted} ({fitted_steps} steps per epoch; set {flag} to override)"
    )
    return BatchFit(fitted, batch_size, fitted_steps, message=message)


# The reference's linear protocol (main_lincls.py), for the choices a LinearConfig leaves at None.
REFERENCE_BATCH_SIZE = 4096
REFERENCE_PROTOCOL = {"optimizer": "lars", "augment": True, "standardize": False}
# On a small set the probe trains as the demo's quick probe does. LARS with trust 0.001
# moves each weight by about lr x 0.001 x its norm per step: the reference's 28,000
# ImageNet steps at lr 1.6 add up, a small set's few thousand steps at a fitted batch's
# lr do not. Random crops of a few thousand small images add little a linear layer can
# use, and cost an encoder pass per step; standardised features let one lr fit a trained
# and a random-init encoder alike.
SMALL_DATA_PROTOCOL = {"optimizer": "sgd", "augment": False, "standardize": True}


def is_small_training_set(num_examples):
    """Whether the reference batch leaves fewer than `MIN_STEPS_PER_EPOCH` steps per epoch on this many images."""
    return num_examples // REFERENCE_BATCH_SIZE < MIN_STEPS_PER_EPOCH


def _flag_text(value):
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def fit_linear_config(config, num_train_examples):
    """A `LinearConfig` with every choice left at None filled in for `num_train_examples` training images.

    Returns (config, notes, warnings): `notes` say what the rule chose, `warnings` what
    it would have chosen for a batch the config holds. Choices the config already holds
    (given on the command line or in a flagfile) stay.
    """
    small = is_small_training_set(num_train_examples)
    protocol = SMALL_DATA_PROTOCOL if small else REFERENCE_PROTOCOL
    changes = {name: value for name, value in protocol.items() if getattr(config, name) is None}
    if changes.get("standardize") and (config.augment or config.cache_features is False):
        changes["standardize"] = False  # end-to-end training asked for: raw features
    notes = []
    if small and changes:
        chosen = " ".join(f"--{name}={_flag_text(value)}" for name, value in changes.items())
        notes.append(
            f"{num_train_examples} training images is a small set for the reference's linear protocol (LARS, "
            f"batch 4096, augmented crops): using {chosen}; set these flags to override"
        )
    fitted = dataclasses.replace(config, **changes)
    explicit = config.batch_size is not None
    fit = fit_batch_size(
        config.batch_size if explicit else REFERENCE_BATCH_SIZE,
        num_train_examples,
        explicit=explicit,
        drop_remainder=not fitted.cached,
    )
    if fit.message:
        notes.append(fit.message)
    return dataclasses.replace(fitted, batch_size=fit.batch_size), notes, [fit.warning] if fit.warning else []
