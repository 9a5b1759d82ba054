"""What a training job runs on: devices and strategies, CPU facts, finiteness, checkpoints, callbacks, the fit loop.

- `distribute`: strategy factory from a string; multi-worker fit.
- `cpu`: what the host CPU does natively (bf16, AMX), without importing TensorFlow.
- `finite`: non-finite state and dead-encoder checks.
- `files`: atomic writes of text and JSON.
- `checkpoints`: the run's checkpoint, restore with fallback over damaged files.
- `best_checkpoint`: a score at every checkpoint, the best one's weights kept (`--keep_best`).
- `callbacks`: step checkpoints, scalar logs, the NaN guard, per-epoch history.
- `loop`: `fit_from_step`, resuming inside an epoch.

The optimisers and learning-rate schedules are `simsiam_tf.optim`.
"""
