import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _float32_policy():
    """Each test starts and ends with the float32 dtype policy, whatever it set."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def tiny_pretrain_run(tmp_path_factory, run=None, write_flags=False, **data):
    """A tiny SimSiam pretraining run on the synthetic set, written by the pretraining job; its directory.

    `data`: overrides of the DataConfig fields (image_size, num_train_examples, ...);
    `run`: overrides of other PretrainConfig fields ({"evaluate": True, ...}); `write_flags`:
    write the run's flags.cfg, as the command-line tool does.
    """
    from simsiam_tf import config
    from simsiam_tf.config import flags
    from simsiam_tf.runs import pretrain

    model_dir = str(tmp_path_factory.mktemp("pretrain"))
    changes = {
        "runtime.model_dir": model_dir,
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "model.dim": 32,
        "model.pred_dim": 16,
        "batch_size": 16,
        "epochs": 1,
        "evaluate": False,
        "export": False,
        "knn_every": 0,
    }
    changes.update({f"data.{name}": value for name, value in data.items()})
    changes.update(run or {})
    run_config = config.replace(config.PretrainConfig(), **changes)
    pretrain.run(run_config, flags_text=flags.flags_text(run_config) if write_flags else None)
    return model_dir


def tiny_config(model_dir, **changes):
    """The PretrainConfig of a tiny run (16 px, 48 synthetic images, 2 epochs of 3 steps) in `model_dir`."""
    base = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "model.dim": 32,
        "model.pred_dim": 16,
        "data.image_size": 16,
        "data.num_train_examples": 48,
        "data.num_eval_examples": 24,
        "batch_size": 16,
        "epochs": 2,
        "checkpoint_every_steps": 2,
        "evaluate": False,
        "export": False,
        "knn_every": 0,
    }
    base.update(changes)
    from simsiam_tf import config

    return config.replace(config.PretrainConfig(), **base)


def variables_of(model):
    """Copies of every weight of `model`, in order."""
    return [v.numpy().copy() for v in model.weights]
