"""The spectrum monitor: label-free readings of a fixed image set during training, and the dimensional-collapse alarm."""

import os
import time

import keras
import tensorflow as tf

from simsiam_tf.evaluation import monitor, spectrum
from simsiam_tf.evaluation.monitor import _write_scalar

LAYERS = ("backbone", "projector")
SUBDIR = "spectrum"  # under the run's log directory
SCALARS = ("center_share", "residual_correlation", "effective_rank", "center_norm", "residual_norm")


def _write_image(name, image, step):
    # As _write_scalar: the event tf.summary.image writes (images plugin: width, height, PNG),
    # without the tensorboard package.
    metadata = tf.compat.v1.SummaryMetadata(plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="images"))
    height, width = image.shape[:2]
    content = tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(image)])
    tf.summary.write(name, content, step=step, metadata=metadata)


class SpectrumMonitor(keras.callbacks.Callback):
    """Every N optimizer steps: the `spectrum.readings` of the backbone features and the projector output
    of a fixed image set (inference mode), and the dimensional-collapse alarm.

    Args:
      images: float [N, H, W, C] images with the evaluation preprocessing, fed in chunks
        of `batch_size`; the same images at every check.
      every_n_steps: a check once at least this many steps passed since the previous one,
        and one at the end of training (`final`).
      log_dir: if given, the scalars (`spectrum/<layer>/<reading>`) and an image of each
        normalised spectrum go to `log_dir/spectrum` at the optimizer's step.
      rank_fraction: the alarm: the projector output's effective rank under this fraction of
        its `rank_limit` (min(images, width)) counts as collapsed; None or 0 turns it off.
      patience, action, hint: as `monitor.CollapseMonitor` (stop, warn or ignore after
        `patience` consecutive collapsed checks; `collapsed`, `collapsed_at_step`,
        `message` and `suspect` record it the same way).

    `history` lists every check (step, and the scalar readings per layer); `latest` holds the
    newest check's full readings (spectra included). `measure(step)` reads the model now
    (cached per step), for callers that need the readings at a step of their own (checkpoints).
    """

    ACTIONS = ("stop", "warn", "ignore")

    def __init__(
        self,
        images,
        every_n_steps=50,
        log_dir=None,
        rank_fraction=None,
        patience=3,
        action="stop",
        hint="",
        batch_size=256,
    ):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if action not in self.ACTIONS:
            raise ValueError(f"action must be one of {self.ACTIONS}, got {action!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if rank_fraction is not None and not 0 <= rank_fraction <= 1:
            raise ValueError(f"rank_fraction must be in [0, 1] (0 or None: no alarm), got {rank_fraction}")
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank != 4 or images.shape[0] < 2:
            raise ValueError(f"images must be [N >= 2, H, W, C], got shape {images.shape}")
        self.images = images
        self.every_n_steps = int(every_n_steps)
        self.log_dir = log_dir
        self.rank_fraction = rank_fraction or None
        self.patience = patience
        self.action = action
        self.hint = hint
        self.batch_size = int(batch_size)
        self.history = []
        self.latest = None
        self.final = None
        self.collapsed = False
        self.collapsed_at_step = None
        self.message = ""
        self.consecutive = 0
        self._last_check = None
        self._cache = (None, None)
        self._forward = None
        self._writer = None
        self.seconds = 0.0  # spent reading the model and writing the logs

    @property
    def suspect(self):
        """True while the latest check read a collapsed rank (the alarm may not have fired yet)."""
        return self.consecutive > 0

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def _outputs(self):
        if self._forward is None:
            backbone, projector = self.model.backbone, self.model.projector

            # One trace with a free batch dimension serves every chunk, the last smaller one included.
            @tf.function(input_signature=[tf.TensorSpec([None, *self.images.shape[1:]], tf.float32)])
            def forward(images):
                features = tf.cast(backbone(images, training=False), tf.float32)
                features = tf.reshape(features, [tf.shape(features)[0], -1])
                return features, tf.cast(projector(features, training=False), tf.float32)

            self._forward = forward
        chunks = [
            self._forward(self.images[i : i + self.batch_size]) for i in range(0, self.images.shape[0], self.batch_size)
        ]
        return {name: tf.concat([c[k] for c in chunks], axis=0) for k, name in enumerate(LAYERS)}

    def measure(self, step=None):
        """{layer: spectrum.readings} of the model as it is now (reused when asked again at the same step)."""
        step = self._step() if step is None else int(step)
        if self._cache[0] == step:
            return self._cache[1]
        started = time.perf_counter()
        outputs = self._outputs()
        result = {name: spectrum.readings(outputs[name]) for name in LAYERS}
        self._cache = (step, result)
        self.seconds += time.perf_counter() - started
        return result

    def on_train_begin(self, logs=None):
        if self._last_check is None:
            self._last_check = self._step()

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step - self._last_check >= self.every_n_steps:
            self._check(step)

    def on_train_end(self, logs=None):
        step = self._step()
        if not self.history or self.history[-1]["step"] != step:
            self._check(step, alarm=False)
        self.final = self.latest
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _check(self, step, alarm=True):
        self._last_check = step
        result = self.measure(step)
        self.latest = dict(result, step=step)
        self.history.append({"step": step, **{name: {k: result[name][k] for k in SCALARS} for name in LAYERS}})
        self._log(step, result)
        if alarm:
            self._alarm(step, result["projector"])

    def _log(self, step, result):
        if not self.log_dir:
            return
        started = time.perf_counter()
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, SUBDIR))
        with self._writer.as_default():
            for name in LAYERS:
                for key in SCALARS:
                    _write_scalar(f"{SUBDIR}/{name}/{key}", result[name][key], step=step)
                _write_image(
                    f"{SUBDIR}/{name}/singular_values", spectrum.spectrum_image(result[name]["spectrum"]), step
                )
        self._writer.flush()
        self.seconds += time.perf_counter() - started

    def _alarm(self, step, reading):
        if self.rank_fraction is None:
            return
        limit = self.rank_fraction * reading["rank_limit"]
        monitor.sound_alarm(
            self,
            reading["effective_rank"] < limit,
            step,
            lambda: (
                f"dimensional collapse at step {step}: the projector output's effective rank "
                f"{reading['effective_rank']:.3g} < {self.rank_fraction} x {reading['rank_limit']} = {limit:.3g} "
                f"for {self.consecutive} consecutive checks (residual correlation "
                f"{reading['residual_correlation']:.3g}, centre share {reading['center_share']:.3g}); the outputs "
                "spread over a few directions only"
            ),
        )


def summary(monitor):
    """What metrics.json keeps of a `SpectrumMonitor`: the final readings per layer (spectra included)
    and the history of the scalar readings."""
    final = monitor.final or monitor.latest
    if final is None:
        return {}
    out = {"step": final["step"], "checks": len(monitor.history), "seconds": round(monitor.seconds, 2)}
    for name in LAYERS:
        reading = dict(final[name])
        reading["spectrum"] = [float(f"{v:.4g}") for v in reading["spectrum"]]
        out[name] = reading
    if monitor.collapsed:
        out["alarm"] = {"step": monitor.collapsed_at_step, "message": monitor.message}
    out["history"] = monitor.history
    return {"spectrum": out}
