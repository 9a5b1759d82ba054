"""The public names of DESIGN.md's contract and of `simsiam_tf.__all__` keep their import paths."""

import importlib

import pytest

import simsiam_tf

CONTRACT = [
    ("simsiam_tf", "SimSiam"),
    ("simsiam_tf", "build_backbone"),
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
    # Moved modules and names, at their old paths.
    ("simsiam_tf.export", "ServingModel"),
    ("simsiam_tf.export", "export_saved_model"),
    ("simsiam_tf.export", "export_after_run"),
    ("simsiam_tf.export", "load_keras_model"),
    ("simsiam_tf.pairs", "make_pools"),
    ("simsiam_tf.tiles", "load_tile_set"),
    ("simsiam_tf.data", "make_synthetic"),
]


@pytest.mark.parametrize("module, name", CONTRACT, ids=lambda v: v if isinstance(v, str) else None)
def test_contract_name_imports(module, name):
    assert callable(getattr(importlib.import_module(module), name))


@pytest.mark.parametrize("name", [n for n in simsiam_tf.__all__ if n != "__version__"])
def test_every_lazy_export_resolves(name):
    assert getattr(simsiam_tf, name) is not None


def test_old_module_paths_are_the_moved_modules():
    from simsiam_tf import pairs, tiles
    from simsiam_tf.data import pairs as data_pairs
    from simsiam_tf.data import tiles as data_tiles

    assert pairs is data_pairs and tiles is data_tiles
    assert simsiam_tf.make_triplet_dataset is data_tiles.make_triplet_dataset
    assert data_pairs.make_class_triplet_dataset is not data_tiles.make_triplet_dataset
