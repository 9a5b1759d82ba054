"""The pretraining job's spectrum monitor, dimensional-collapse alarm and label-free choice of checkpoint."""

import numpy as np
import tensorflow as tf

from simsiam_tf import data
from simsiam_tf.builders import eval_center_crop
from simsiam_tf.errors import RunError
from simsiam_tf.evaluation import spectrum_monitor
from simsiam_tf.training.best_checkpoint import BestCheckpoint

RANK_SCORE = "effective_rank"
HINT = (
    "the projector output lies in a few directions while its per-channel spread looks healthy; check "
    "--use_predictor, --fixed_random_predictor, --weight_decay and the learning rate (or lower "
    "--rank_collapse_fraction when the run's downstream accuracy is fine)"
)


def fixed_images(config, train_source, eval_sets=None):
    """The spectrum monitor's images, float32 [N, S, S, 3]: the first `config.spectrum_images` of the test
    set when the job loaded one (held-out images), else of the training set, with the evaluation preprocessing."""
    if eval_sets is not None:
        batches = eval_sets[1]
    else:
        size = config.data.image_size
        batches = data.make_eval_dataset(train_source, 256, size, center_crop=eval_center_crop(size))
    images = [np.asarray(x) for x, _ in batches.unbatch().take(config.spectrum_images).batch(256)]
    images = np.concatenate(images) if images else np.zeros([0])
    if images.shape[0] < 2:
        raise RunError(
            f"the spectrum monitor found {images.shape[0]} image(s); it needs at least 2: add images, or turn "
            "it off with --spectrum_every_steps=0"
        )
    return images


def monitor_for(config, train_source, eval_sets, log_dir):
    """The job's `SpectrumMonitor` (with the dimensional-collapse alarm), or None when it is off."""
    if not config.spectrum_every_steps:
        return None
    return spectrum_monitor.SpectrumMonitor(
        fixed_images(config, train_source, eval_sets),
        every_n_steps=config.spectrum_every_steps,
        log_dir=log_dir,
        rank_fraction=config.rank_collapse_fraction,
        patience=config.collapse_patience,
        action=config.on_collapse,
        hint=HINT,
    )


def best_checkpoint_for(config, monitor, model, run_checkpoint, write_dir):
    """The checkpoint scorer of --keep_best=rank (the projector output's effective rank), or None."""
    if config.keep_best != "rank":
        return None
    return BestCheckpoint(
        run_checkpoint,
        score=lambda step: monitor.measure(step)["projector"][RANK_SCORE],
        write_dir=write_dir,
        model=networks(model),
        name=RANK_SCORE,
    )


def networks(model):
    """The weights worth keeping of a SimSiam model (no optimizer state), saved under the run checkpoint's names."""
    nets = {"backbone": model.backbone, "projector": model.projector}
    if getattr(model, "predictor", None) is not None:
        nets["predictor"] = model.predictor
    return tf.train.Checkpoint(**nets)


def keep_best(best, model, final_step):
    """Scores the final checkpoint too, loads the best one's weights into `model`; returns what metrics.json says."""
    best.record(final_step)
    record = best.restore_best(networks(model))
    return {"kept_checkpoint": dict(record, rule="highest effective rank of the projector output"), **_scores(best)}


def _scores(best):
    return {"checkpoint_scores": best.scores}
