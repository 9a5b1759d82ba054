import keras
import numpy as np
import pytest

from simsiam_tf.models import heads

Dense = keras.layers.Dense
BN = keras.layers.BatchNormalization
ReLU = keras.layers.ReLU


def _types(model):
    return [type(layer) for layer in model.layers]


def _check_bn(bn, center=True, scale=True, synchronized=False):
    assert bn.momentum == pytest.approx(0.9)
    assert bn.epsilon == pytest.approx(1e-5)
    assert (bn.center, bn.scale, bn.synchronized) == (center, scale, synchronized)


def test_three_layer_projector():
    proj = heads.build_projector(16, dim=32)
    assert _types(proj) == [Dense, BN, ReLU, Dense, BN, ReLU, Dense, BN]
    assert proj.built and proj.name == "projector"
    dense = [l for l in proj.layers if isinstance(l, Dense)]
    bns = [l for l in proj.layers if isinstance(l, BN)]
    assert [d.units for d in dense] == [16, 16, 32]  # hidden width defaults to in_dim
    assert not any(d.use_bias for d in dense)
    _check_bn(bns[0])
    _check_bn(bns[1])
    _check_bn(bns[2], center=False, scale=False)
    assert not bns[2].trainable_weights
    assert proj(np.ones((4, 16), np.float32)).shape == (4, 32)


def test_two_layer_projector_with_hidden_dim():
    proj = heads.build_projector(16, dim=32, hidden_dim=24, num_layers=2, sync_bn=True, name="proj")
    assert _types(proj) == [Dense, BN, ReLU, Dense, BN]
    dense = [l for l in proj.layers if isinstance(l, Dense)]
    assert [d.units for d in dense] == [24, 32]
    assert dense[1].kernel.shape == (24, 32)
    bns = [l for l in proj.layers if isinstance(l, BN)]
    _check_bn(bns[0], synchronized=True)
    _check_bn(bns[1], center=False, scale=False, synchronized=True)
    assert proj.name == "proj"
    assert proj(np.ones((4, 16), np.float32)).shape == (4, 32)


def test_projector_without_bn():
    proj = heads.build_projector(16, dim=32, use_bn=False)
    assert _types(proj) == [Dense, ReLU, Dense, ReLU, Dense]
    assert all(l.use_bias for l in proj.layers if isinstance(l, Dense))
    assert proj(np.ones((4, 16), np.float32)).shape == (4, 32)


def test_predictor():
    pred = heads.build_predictor(dim=32, pred_dim=8)
    assert _types(pred) == [Dense, BN, ReLU, Dense]
    fc1, bn, _, fc2 = pred.layers
    assert (fc1.units, fc1.use_bias) == (8, False)
    assert (fc2.units, fc2.use_bias) == (32, True)
    _check_bn(bn)
    assert pred.name == "predictor"
    assert pred(np.ones((4, 32), np.float32)).shape == (4, 32)

    no_bn = heads.build_predictor(dim=32, pred_dim=8, use_bn=False)
    assert _types(no_bn) == [Dense, ReLU, Dense]
    assert all(l.use_bias for l in no_bn.layers if isinstance(l, Dense))


def test_pytorch_linear_initialisation():
    in_dim, hidden = 64, 48
    proj = heads.build_projector(in_dim, dim=32, hidden_dim=hidden, use_bn=False)
    fan_ins = [in_dim, hidden, hidden]
    for layer, fan_in in zip([l for l in proj.layers if isinstance(l, Dense)], fan_ins):
        bound = 1.0 / np.sqrt(fan_in)
        kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
        assert np.abs(kernel).max() <= bound + 1e-7
        assert np.abs(kernel).max() > 0.9 * bound  # uniform over the whole range
        assert np.abs(bias).max() <= bound + 1e-7
        assert bias.max() - bias.min() > 0.5 * bound
    pred = heads.build_predictor(dim=32, pred_dim=16)
    fc2 = pred.layers[-1]
    assert np.abs(fc2.bias.numpy()).max() <= 1.0 / np.sqrt(16) + 1e-7
    assert np.abs(fc2.kernel.numpy()).max() <= 1.0 / np.sqrt(16) + 1e-7


def test_layers_draw_their_own_values():
    proj = heads.build_projector(16, dim=16, use_bn=False)
    k = [l.kernel.numpy() for l in proj.layers if isinstance(l, Dense)]
    b = [l.bias.numpy() for l in proj.layers if isinstance(l, Dense)]
    assert not np.allclose(k[1], k[2])
    assert not np.allclose(b[1], b[2])


def test_fan_in_uniform_serialises():
    init = heads.FanInUniform(25, seed=3)
    assert keras.saving.get_registered_name(heads.FanInUniform) == "simsiam_tf>FanInUniform"
    config = init.get_config()
    assert config["fan_in"] == 25
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(init))
    assert isinstance(clone, heads.FanInUniform)
    np.testing.assert_array_equal(clone((100,)), init((100,)))
    values = np.asarray(init((1000,)))
    assert values.min() >= -0.2 and values.max() <= 0.2 and values.std() > 0.05
    with pytest.raises(ValueError):
        heads.FanInUniform(0)


@pytest.mark.parametrize(
    "bn, types, biases",
    [
        # Table 3: (c) the reference, (b) BN on the hidden layers only, (a) no BN.
        ("all", [Dense, BN, ReLU, Dense, BN, ReLU, Dense, BN], [False, False, False]),
        ("hidden", [Dense, BN, ReLU, Dense, BN, ReLU, Dense], [False, False, True]),
        ("none", [Dense, ReLU, Dense, ReLU, Dense], [True, True, True]),
    ],
)
def test_projector_bn_placements(bn, types, biases):
    proj = heads.build_projector(16, dim=32, hidden_dim=24, bn=bn)
    assert _types(proj) == types
    dense = [l for l in proj.layers if isinstance(l, Dense)]
    assert [d.units for d in dense] == [24, 24, 32]
    assert [d.use_bias for d in dense] == biases
    bns = [l for l in proj.layers if isinstance(l, BN)]
    for layer in bns[:2]:
        _check_bn(layer)
    if bn == "all":
        _check_bn(bns[2], center=False, scale=False)
    assert proj(np.ones((4, 16), np.float32)).shape == (4, 32)


@pytest.mark.parametrize(
    "bn, types, biases",
    [
        ("hidden", [Dense, BN, ReLU, Dense], [False, True]),  # the reference
        ("all", [Dense, BN, ReLU, Dense, BN], [False, False]),  # Table 3d
        ("none", [Dense, ReLU, Dense], [True, True]),
    ],
)
def test_predictor_bn_placements(bn, types, biases):
    pred = heads.build_predictor(dim=32, pred_dim=8, bn=bn, sync_bn=True)
    assert _types(pred) == types
    assert [l.use_bias for l in pred.layers if isinstance(l, Dense)] == biases
    bns = [l for l in pred.layers if isinstance(l, BN)]
    if bns:
        _check_bn(bns[0], synchronized=True)
    if bn == "all":
        _check_bn(bns[1], center=False, scale=False, synchronized=True)
        assert pred.layers[-1].name == "predictor_bn2"
    assert pred(np.ones((4, 32), np.float32)).shape == (4, 32)


def test_bn_argument_errors():
    with pytest.raises(ValueError, match="bn must be one of all, hidden, none; got 'output'"):
        heads.build_projector(16, dim=32, bn="output")
    with pytest.raises(ValueError, match="use_bn=False contradicts bn='hidden'"):
        heads.build_predictor(dim=32, pred_dim=8, use_bn=False, bn="hidden")
    with pytest.raises(ValueError, match="hidden_dim"):
        heads.build_projector(16, dim=32, hidden_dim=0)
    # use_bn=False keeps meaning bn="none".
    assert _types(heads.build_predictor(dim=32, pred_dim=8, use_bn=False)) == _types(
        heads.build_predictor(dim=32, pred_dim=8, bn="none")
    )
