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
