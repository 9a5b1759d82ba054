"""The public names users import (the API reference and the notebooks use them) and `simsiam_tf.__all__` keep their import paths."""

import importlib

import pytest

import simsiam_tf

CONTRACT = [
    ("simsiam_tf", "SimSiam"),
    ("simsiam_tf", "build_backbone"),
    ("simsiam_tf", "register_backbone"),
    ("simsiam_tf", "CoupledSGD"),
    ("simsiam_tf", "WarmupCosine"),
    ("simsiam_tf.losses", "simsiam_loss"),
    ("simsiam_tf.losses", "triplet_loss"),
    ("simsiam_tf.losses", "contrastive_loss"),
    ("simsiam_tf.optim", "LARS"),
    ("simsiam_tf.data", "load_source"),
    ("simsiam_tf.data", "make_pretrain_dataset"),
    ("simsiam_tf.data", "make_eval_dataset"),
    ("simsiam_tf.augment", "TwoViewAugment"),
    ("simsiam_tf.config", "PretrainConfig"),
    ("simsiam_tf.config", "LinearConfig"),
    ("simsiam_tf.config", "VerifyConfig"),
    ("simsiam_tf.config", "ExportConfig"),
    # Homes of the regrouped package.
    ("simsiam_tf.serving", "ServingModel"),
    ("simsiam_tf.serving", "export_saved_model"),
    ("simsiam_tf.serving", "export_after_run"),
    ("simsiam_tf.serving", "load_keras_model"),
    ("simsiam_tf.models", "SimSiam"),
    ("simsiam_tf.models", "LinearProbe"),
    ("simsiam_tf.data.pairs", "make_pools"),
    ("simsiam_tf.data.tiles", "load_tile_set"),
    ("simsiam_tf.data", "make_synthetic"),
    ("simsiam_tf.data", "make_pretrain_crops_dataset"),
]


@pytest.mark.parametrize("module, name", CONTRACT, ids=lambda v: v if isinstance(v, str) else None)
def test_contract_name_imports(module, name):
    assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("name", [n for n in simsiam_tf.__all__ if n != "__version__"])
def test_every_lazy_export_resolves(name):
    assert getattr(simsiam_tf, name) is not None


@pytest.mark.parametrize(
    "old",
    ["simsiam_tf.pairs", "simsiam_tf.tiles", "simsiam_tf.data.crops", "simsiam_tf.backbones", "simsiam_tf.export"],
)
def test_no_forwarding_modules_are_left_at_old_paths(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_the_tile_triplets_and_the_class_triplets_are_different_streams():
    from simsiam_tf.data import pairs, tiles

    assert simsiam_tf.make_triplet_dataset is tiles.make_triplet_dataset
    assert pairs.make_class_triplet_dataset is not tiles.make_triplet_dataset
