"""What every model of the package must do, checked one way for all of them.

`check_model_contract` builds nothing itself: a test gives it a model, an input and
(for models that train with a custom step) a batch; it then checks that the model

- calls on the input and gives finite outputs of a fixed structure;
- trains one step when given a batch (so that weights and BatchNorm statistics move
  away from their initial values before saving);
- is registered as `simsiam_tf>ClassName`, and its `get_config` survives JSON and
  `from_config` unchanged (the same config again, the same variable shapes);
- saves to a `.keras` file and loads back as the same class, with every variable equal
  and equal outputs on the input.
"""

import json

import keras
import numpy as np
import tensorflow as tf


def _outputs(model, inputs):
    result = model(inputs, training=False)
    return [np.asarray(t) for t in tf.nest.flatten(result)]


def check_model_contract(model, inputs, tmp_path, train_batch=None, optimizer=None):
    """Runs the shared checks on `model`; returns the reloaded model for model-specific assertions."""
    cls = type(model)
    if train_batch is not None:
        model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05, momentum=0.9))
        logs = model.train_step(train_batch)
        assert all(np.isfinite(float(v)) for v in logs.values()), logs
    before = _outputs(model, inputs)
    assert before and all(np.isfinite(o).all() for o in before)

    assert keras.saving.get_registered_name(cls) == f"simsiam_tf>{cls.__name__}"
    config = json.loads(json.dumps(model.get_config()))
    clone = cls.from_config(config)
    assert type(clone) is cls
    assert json.loads(json.dumps(clone.get_config())) == config
    _outputs(clone, inputs)  # builds every sub-model the call reaches
    assert sorted(tuple(w.shape) for w in clone.weights) == sorted(tuple(w.shape) for w in model.weights)

    path = str(tmp_path / f"{cls.__name__.lower()}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)
    for a, b in zip(_outputs(loaded, inputs), before):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    return loaded
