"""Images for the jobs: sources, the synthetic sets, and the tf.data pipelines on them.

- `source`: `Source`, what every loader returns.
- `sources`: `load_source` ("synthetic", "synthetic_scenes", TFDS names, "folder"), label spaces.
- `image_files`: the header checks of a folder's files (bombs, links, FIFOs, empty and damaged
  files) and the `SkipReport` of what a folder source left out.
- `tfds_source`: TFDS datasets, in memory or streamed from their files in a seeded order.
- `synthetic`: the embedded synthetic sets (`make_synthetic`, `make_synthetic_scenes`).
- `pipeline`: pretraining views, evaluation and probe batches (`make_*_dataset`),
  deterministic in (seed, step); batch layout over replicas and seed streams; the host
  half of augmentation on the device (`make_pretrain_crops_dataset`: uint8 crops and seeds).
- `service`: the tf.data service (dispatcher, workers, distributing a pipeline).
- `pairs`: pair verification's pools, pair and triplet streams, N-way trials.
- `pair_images`: the labelled images of pair verification, read one at a time.
- `tiles`: tiles and their neighbours, and SimTriplet's triplet stream.
- `views`: `two_view_dataset`, view pairs for `model.fit` from a Dataset, an array or files.

The names most callers need are importable from here.
"""

from simsiam_tf.data.pipeline import (
    DEFAULT_SHUFFLE_BUFFER,
    make_eval_dataset,
    make_pretrain_crops_dataset,
    make_pretrain_dataset,
    make_probe_train_dataset,
)
from simsiam_tf.data.sources import (
    AUTOTUNE,
    IMAGE_EXTENSIONS,
    IN_MEMORY_MAX_BYTES,
    Source,
    check_label_spaces,
    load_source,
)
from simsiam_tf.data.synthetic import (
    SYNTHETIC_HUES,
    SYNTHETIC_PATTERNS,
    SYNTHETIC_SPLITS,
    make_synthetic,
    make_synthetic_scenes,
)
from simsiam_tf.data.views import two_view_dataset

__all__ = [
    "AUTOTUNE",
    "DEFAULT_SHUFFLE_BUFFER",
    "IMAGE_EXTENSIONS",
    "IN_MEMORY_MAX_BYTES",
    "SYNTHETIC_HUES",
    "SYNTHETIC_PATTERNS",
    "SYNTHETIC_SPLITS",
    "Source",
    "check_label_spaces",
    "load_source",
    "make_eval_dataset",
    "make_pretrain_crops_dataset",
    "make_pretrain_dataset",
    "make_probe_train_dataset",
    "make_synthetic",
    "make_synthetic_scenes",
    "two_view_dataset",
]
