"""The held-out split of an image folder that has no `train/` and `test/` sub-folders.

Evaluation must never score the images the encoder trained on. A labelled folder
without split sub-folders is therefore cut once, by a rule every tool applies the
same way (`simsiam-pretrain` trains on the rest, the evaluation and `simsiam-linear`,
`simsiam-verify` and `simsiam-embed` score the held-out part):

- the files are listed in sorted order (paths relative to the folder);
- classes are visited in increasing order; each class's positions are permuted by one
  NumPy generator seeded with `(seed, HOLDOUT_STREAM)` and the first `k` held out,
  `k = floor(fraction * n + 0.5)` of its `n` images, at least 1, and at most `n - 1`
  (a class of one image keeps it for training).

The record (`Holdout.describe`) holds the counts per class, the seed and a SHA-256 of
the sorted held-out file list, so two runs can tell whether they held out the same files.
"""

import dataclasses
import hashlib
import math
from typing import Dict, Optional, Tuple

import numpy as np

# Stream id of the hold-out generator, apart from the label-budget stream (11) and the data streams.
HOLDOUT_STREAM = 13
PARTS = ("train", "held_out")


@dataclasses.dataclass(frozen=True)
class HoldoutSpec:
    """Which part of a split-less folder a job loads: `part` "train" (the rest) or "held_out"."""

    fraction: float
    seed: int
    part: str

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"holdout part must be one of {', '.join(PARTS)}, got {self.part!r}")
        if not 0.0 <= self.fraction < 1.0 or not math.isfinite(self.fraction):
            raise ValueError(f"holdout_fraction must lie in [0, 1), got {self.fraction}")


@dataclasses.dataclass(frozen=True, eq=False)
class Holdout:
    """The held-out images of a folder: a boolean mask over its sorted files, and how it was drawn."""

    held_out: np.ndarray
    files: Tuple[str, ...]
    counts: Dict[str, int]
    fraction: float
    seed: int

    @property
    def files_sha256(self):
        """Hex SHA-256 of the held-out relative paths, sorted, one per line (UTF-8)."""
        names = sorted(f for f, held in zip(self.files, self.held_out) if held)
        return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()

    @property
    def num_held_out(self):
        return int(np.count_nonzero(self.held_out))

    def describe(self):
        """What metrics.json records about the hold-out."""
        return dict(
            fraction=self.fraction,
            seed=self.seed,
            num_held_out=self.num_held_out,
            num_train=int(self.held_out.size - self.num_held_out),
            counts_per_class=dict(self.counts),
            files_sha256=self.files_sha256,
        )

    def summary(self):
        return (
            f"held out {self.num_held_out} of {self.held_out.size} images for evaluation "
            f"(fraction {self.fraction:g} per class, seed {self.seed}, sha256 {self.files_sha256[:12]}); "
            "pretraining does not see them"
        )


def held_out_count(num_images, fraction):
    """How many of a class's `num_images` are held out: rounded half up, at least 1, never all of them."""
    if num_images < 2 or fraction <= 0:
        return 0
    return min(num_images - 1, max(1, int(math.floor(fraction * num_images + 0.5))))


def draw_holdout(files, labels, fraction, seed=0, class_names=None):
    """The `Holdout` of a labelled folder: `files` (relative paths, sorted) and their int class ids.

    See the module doc for the rule. `class_names` name the counts (else the class ids).
    """
    labels = np.asarray(labels)
    if labels.shape != (len(files),):
        raise ValueError(f"one label per file needed: {len(files)} files, labels of shape {labels.shape}")
    if list(files) != sorted(files):
        raise ValueError("draw_holdout needs the files in sorted order")
    if labels.size and labels.min() < 0:
        raise ValueError("a stratified hold-out needs labelled images, but some labels are -1 (a flat folder?)")
    rng = np.random.default_rng([int(seed), HOLDOUT_STREAM])
    held_out = np.zeros([labels.size], bool)
    counts = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = held_out_count(members.size, fraction)
        held_out[rng.permutation(members)[:k]] = True
        name = class_names[int(c)] if class_names else str(int(c))
        counts[name] = int(k)
    return Holdout(held_out, tuple(files), counts, float(fraction), int(seed))


def cut_folder(data_dir, paths, labels, class_names, spec):
    """(paths, labels, Holdout) of the part `spec` names of a labelled folder's images (absolute `paths`)."""
    import os

    files = [os.path.relpath(p, data_dir) for p in paths]
    order = sorted(range(len(files)), key=files.__getitem__)
    files = [files[i] for i in order]
    paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    drawn = draw_holdout(files, labels, spec.fraction, spec.seed, class_names)
    keep = drawn.held_out if spec.part == "held_out" else ~drawn.held_out
    return [p for p, k in zip(paths, keep) if k], [y for y, k in zip(labels, keep) if k], drawn


def spec_for_split(fraction, seed, split, train_split, eval_split):
    """The `HoldoutSpec` of loading `split` of a folder job, or None without a hold-out.

    The eval split is the held-out part, any other split the rest; fraction 0 means none.
    """
    if not fraction:
        return None
    part = "held_out" if split == eval_split and split != train_split else "train"
    return HoldoutSpec(float(fraction), int(seed), part)


def record_lines(holdout: Optional[Holdout]):
    """Comment lines for a run's flags.cfg that name the hold-out (empty without one)."""
    if holdout is None:
        return ""
    d = holdout.describe()
    counts = ",".join(f"{k}:{v}" for k, v in d["counts_per_class"].items())
    return (
        f"# holdout: {d['num_held_out']} held-out images, seed {d['seed']}, fraction {d['fraction']:g}, "
        f"files_sha256 {d['files_sha256']}\n# holdout counts per class: {counts}\n"
    )


def recorded_sha256(flags_text):
    """The files_sha256 a flags.cfg's hold-out comment records, or None."""
    for line in flags_text.splitlines():
        if line.startswith("# holdout:") and "files_sha256 " in line:
            return line.split("files_sha256 ", 1)[1].split()[0]
    return None
