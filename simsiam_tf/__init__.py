"""SimSiam self-supervised representation learning in Keras 3 / TensorFlow.

Public names are imported lazily so that `import simsiam_tf` stays cheap and a
command-line tool pays only for what it uses.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # models
    "SimSiam": "simsiam_tf.models",
    "SimTriplet": "simsiam_tf.models.simtriplet",
    "LinearProbe": "simsiam_tf.models",
    "PairVerifier": "simsiam_tf.models.verifier",
    # backbones
    "build_backbone": "simsiam_tf.models.backbones",
    "resnet": "simsiam_tf.models.backbones",
    "register_backbone": "simsiam_tf.models.backbones",
    # heads
    "build_projector": "simsiam_tf.models.heads",
    "build_predictor": "simsiam_tf.models.heads",
    # losses
    "negative_cosine": "simsiam_tf.losses",
    "simsiam_loss": "simsiam_tf.losses",
    # optimisation
    "scaled_lr": "simsiam_tf.optim",
    "WarmupCosine": "simsiam_tf.optim",
    "CoupledSGD": "simsiam_tf.optim",
    # data and augmentation
    "TwoViewAugment": "simsiam_tf.augment",
    "load_source": "simsiam_tf.data",
    "make_pretrain_dataset": "simsiam_tf.data",
    "two_view_dataset": "simsiam_tf.data",
    "load_tile_set": "simsiam_tf.data.tiles",
    "make_triplet_dataset": "simsiam_tf.data.tiles",
    # export
    "export_saved_model": "simsiam_tf.serving",
    "export_run": "simsiam_tf.runs.export",
    "ServingModel": "simsiam_tf.serving",
    # configs
    "PretrainConfig": "simsiam_tf.config",
    "LinearConfig": "simsiam_tf.config",
    "ExportConfig": "simsiam_tf.config",
    "VerifyConfig": "simsiam_tf.config",
    "EmbedConfig": "simsiam_tf.config",
    # embeddings
    "NeighbourIndex": "simsiam_tf.evaluation.neighbours",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'simsiam_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
