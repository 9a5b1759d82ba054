"""The projector width and Table 3's BN variants from ModelConfig, flags and flags.cfg to the built heads."""

import keras
import pytest

from simsiam_tf import builders, models
from simsiam_tf import config as config_lib
from simsiam_tf.config import flags as config_flags

TINY = {"model.width_multiplier": 0.125, "model.dim": 16, "model.pred_dim": 8, "data.image_size": 16}


def layer_kinds(head):
    """The head's layers as a string: D (Dense with bias), d (without), B (BN with centre/scale), b (without), R."""
    out = []
    for layer in head.layers:
        if isinstance(layer, keras.layers.Dense):
            out.append("D" if layer.use_bias else "d")
        elif isinstance(layer, keras.layers.BatchNormalization):
            out.append("B" if layer.center and layer.scale else "b")
        elif isinstance(layer, keras.layers.ReLU):
            out.append("R")
    return "".join(out)


def build(**changes):
    cfg = config_lib.replace(config_lib.PretrainConfig(), **TINY, **changes).validate()
    import tensorflow as tf

    return builders.build_model(cfg, tf.distribute.get_strategy())


# The reference's builder.py: projector Linear-BN-ReLU (x2 for ImageNet) then Linear-BN(affine=False);
# predictor Linear-BN-ReLU-Linear(bias). The paper's Table 3 variants move the BN layers.
@pytest.mark.parametrize(
    "projector_bn, predictor_bn, projector, predictor",
    [
        ("all", "hidden", "dBRdb", "dBRD"),  # the reference, Table 3c
        ("hidden", "hidden", "dBRD", "dBRD"),  # Table 3b: no BN on the projector's output
        ("all", "all", "dBRdb", "dBRdb"),  # Table 3d: BN on the predictor's output too
        ("none", "none", "DRD", "DRD"),  # Table 3a
    ],
)
def test_bn_variants_reach_the_heads(projector_bn, predictor_bn, projector, predictor):
    model = build(**{"model.projector_bn": projector_bn, "model.predictor_bn": predictor_bn})
    assert (layer_kinds(model.projector), layer_kinds(model.predictor)) == (projector, predictor)
    assert (model.projector_bn, model.predictor_bn) == (projector_bn, predictor_bn)


def test_heads_bn_false_is_none_for_both_and_contradictions_fail():
    model = build(**{"model.heads_bn": False})
    assert (layer_kinds(model.projector), layer_kinds(model.predictor)) == ("DRD", "DRD")
    build(**{"model.heads_bn": False, "model.projector_bn": "none", "model.predictor_bn": "none"})
    for field, value in (("projector_bn", "hidden"), ("predictor_bn", "all")):
        with pytest.raises(ValueError, match=f"heads_bn=false .*contradicts .*{field}={value}"):
            config_lib.replace(config_lib.ModelConfig(), heads_bn=False, **{field: value}).validate()


def test_projector_hidden_dim_zero_is_the_backbone_width():
    assert build().projector.layers[0].units == 512 * 0.125  # ResNet-18 ends with 512 channels, x width 0.125
    assert build(**{"model.projector_hidden_dim": 24}).projector.layers[0].units == 24
    with pytest.raises(ValueError, match="projector_hidden_dim must be >= 0"):
        config_lib.ModelConfig(projector_hidden_dim=-1).validate()
    with pytest.raises(ValueError, match="projector_bn must be one of all, hidden, none"):
        config_lib.ModelConfig(projector_bn="output").validate()


def test_flags_cfg_rebuilds_the_same_heads(tmp_path):
    path = tmp_path / "flags.cfg"
    path.write_text(
        "# tool: simsiam-pretrain\n--width_multiplier=0.125\n--dim=16\n--pred_dim=8\n"
        "--projector_hidden_dim=24\n--projector_bn=hidden\n--predictor_bn=all\n"
    )
    values = config_flags.read_flags_file(str(path))
    assert config_flags.detect_kind(values) == "pretrain"
    cfg = config_flags.config_from_flags(config_lib.PretrainConfig, values)
    import tensorflow as tf

    model = builders.build_model(cfg, tf.distribute.get_strategy())
    assert model.projector.layers[0].units == 24
    assert (layer_kinds(model.projector), layer_kinds(model.predictor)) == ("dBRD", "dBRdb")


def test_get_config_round_trip_keeps_the_variants():
    model = build(**{"model.projector_bn": "hidden", "model.predictor_bn": "all", "model.projector_hidden_dim": 24})
    clone = models.SimSiam.from_config(model.get_config())
    assert (clone.projector_bn, clone.predictor_bn, clone.projector_hidden_dim) == ("hidden", "all", 24)
    assert (layer_kinds(clone.projector), layer_kinds(clone.predictor)) == ("dBRD", "dBRdb")
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
