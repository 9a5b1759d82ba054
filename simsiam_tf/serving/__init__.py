"""Shipping an encoder: the serving model with its signatures, SavedModel and `.keras` writers, the export at a job's end.

- `model`: `ServingModel`, the input checks, `export_saved_model`, `export_models`, `load_keras_model`.
- `export`: `export_after_run`, what a job calls when `export=True`.

Exporting a finished run directory is the job `simsiam_tf.runs.export` (`simsiam-export`).
"""

from simsiam_tf.serving.export import EXPORT_SUBDIR, export_after_run
from simsiam_tf.serving.model import (
    FLOAT_RANGE_MESSAGE,
    IMAGES_MESSAGE,
    KERAS_NAME,
    SAVED_MODEL_NAME,
    ServingModel,
    check_float_range,
    check_images,
    export_models,
    export_saved_model,
    load_keras_model,
    prepare_images,
)

__all__ = [
    "EXPORT_SUBDIR",
    "FLOAT_RANGE_MESSAGE",
    "IMAGES_MESSAGE",
    "KERAS_NAME",
    "SAVED_MODEL_NAME",
    "ServingModel",
    "check_float_range",
    "check_images",
    "export_after_run",
    "export_models",
    "export_saved_model",
    "load_keras_model",
    "prepare_images",
]
