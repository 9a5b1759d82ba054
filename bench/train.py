"""End-to-end `fit` throughput: the real input pipeline against the same steps on cached tensors.

Both runs train the same compiled model (built as `simsiam-pretrain` builds it, see
`bench/step.py`) with `model.fit`:

- pipeline: `make_pretrain_dataset` on the synthetic set with the library's
  two-view augmentation (CIFAR recipe up to 64 px, ImageNet recipe above), which
  shares the CPU with the step;
- cached: `--cached_batches` batches taken from that pipeline once, held in memory
  and replayed, so no augmentation runs while timing.

`--source jpeg` feeds a folder of generated JPEGs instead (`jpeg_bench.write_jpegs`,
500 x 375 at quality 90 by default) through the folder source, as `--dataset=folder`
does. `--augment_on=device` measures the device placement: the pipeline yields uint8
crops and seeds (`make_pretrain_crops_dataset`) and the photometric stage runs in the
train step (`augment.device.DeviceViews`), in the cached run too, so the difference
is the host's share only.

The two alternate, `--steps` timed steps each per round, for `--rounds` rounds; a
step's time is the interval between the ends of consecutive batches (the first batch
of each `fit` call, which starts the iterator, is not timed). The input pipeline's
cost is the fraction of the end-to-end step time that the cached run saves:
`1 - cached_step_s / pipeline_step_s` (negative values are noise: nothing to save).

  python bench/train.py --backbone resnet18_cifar --image_size 32 --batch 128
  python bench/train.py --backbone resnet18 --image_size 224 --batch 16 --source jpeg --augment_on device

The last output line is JSON with `images_per_s` (end to end, with the pipeline),
`cached_images_per_s` and `pipeline_fraction`.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import step as step_bench  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    step_bench.add_model_args(parser)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per fit call")
    parser.add_argument("--warmup", type=int, default=1, help="untimed fit steps first (tracing)")
    parser.add_argument("--rounds", type=int, default=2, help="pipeline/cached fit calls each")
    parser.add_argument("--num_examples", type=int, default=2048, help="synthetic images")
    parser.add_argument("--cached_batches", type=int, default=2)
    parser.add_argument("--recipe", default="auto", choices=("auto", "cifar", "imagenet"))
    parser.add_argument("--source", default="synthetic", choices=("synthetic", "jpeg"))
    parser.add_argument("--augment_on", default="host", choices=("host", "device"))
    parser.add_argument("--jpeg_size", type=int, nargs=2, default=[500, 375], metavar=("WIDTH", "HEIGHT"))
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0 or args.cached_batches < 1:
        parser.error("--steps, --rounds and --cached_batches must be at least 1, --warmup at least 0")
    if args.num_examples < args.batch:
        parser.error("--num_examples must be at least --batch")
    return args


class _StepTimer:
    """Keras callback recording the time between consecutive batch ends."""

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                timer.last = None

            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                cpu = time.process_time()
                if timer.last is not None:
                    timer.times.append(now - timer.last[0])
                    timer.cpu_times.append(cpu - timer.last[1])
                timer.last = (now, cpu)

        self.callback = Callback()
        self.times, self.cpu_times = [], []
        self.last = None

    def take(self):
        times, cpu_times = self.times, self.cpu_times
        self.times, self.cpu_times = [], []
        return times, cpu_times


def run(args):
    import pipeline as pipeline_bench
    import tensorflow as tf

    from simsiam_tf import data

    step_bench.configure_threads(args.intra_op_threads, args.inter_op_threads)
    config = step_bench.pretrain_config(args)
    config.validate()
    model = step_bench.build_compiled_model(config)
    step_bench.set_small_map_grad(model, step_bench.SMALL_MAP_GRAD[args.small_map_grad])

    if args.source == "jpeg":
        import tempfile

        import jpeg_bench

        folder = tempfile.mkdtemp(prefix="train_bench_")
        jpeg_bench.write_jpegs(folder, args.num_examples, *args.jpeg_size, 90, args.seed)
        source = data.load_source("folder", data_dir=folder, image_size=args.image_size)
    else:
        source = data.load_source(
            "synthetic", image_size=args.image_size, seed=args.seed, num_examples=args.num_examples
        )
    augment, recipe = pipeline_bench.make_augment(args.image_size, args.recipe)
    if args.augment_on == "device":
        from simsiam_tf.augment import device as device_augment

        model.view_transform = device_augment.DeviceViews(augment)
        pipeline_ds = data.make_pretrain_crops_dataset(source, args.batch, augment, seed=args.seed)
    else:
        pipeline_ds = data.make_pretrain_dataset(source, args.batch, augment, seed=args.seed)
    batches = list(pipeline_ds.take(args.cached_batches))
    cached_ds = tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda *b: tf.stack(b), *batches)).repeat()

    timer = _StepTimer()

    def fit(dataset, steps):
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer.callback], shuffle=False)

    started = time.perf_counter()
    fit(cached_ds, 1 + args.warmup)  # traces the train function once
    first_s = time.perf_counter() - started
    timer.take()

    results = {"pipeline": ([], []), "cached": ([], [])}
    for i in range(args.rounds):
        order = [("pipeline", pipeline_ds), ("cached", cached_ds)]
        if i % 2:
            order.reverse()
        for name, dataset in order:
            fit(dataset, args.steps + 1)
            times, cpu_times = timer.take()
            results[name][0].extend(times)
            results[name][1].extend(cpu_times)

    pipe, cached = results["pipeline"][0], results["cached"][0]
    pipe_med, cached_med = statistics.median(pipe), statistics.median(cached)
    out = {
        "bench": "train",
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "precision": args.precision,
        "jit_compile": args.jit_compile,
        "small_map_grad": step_bench.resolved_small_map_grad(args),
        "recipe": recipe,
        "source": args.source,
        "augment_on": args.augment_on,
        "steps": args.steps,
        "rounds": args.rounds,
        "images_per_s": round(args.batch / pipe_med, 2),
        "images_per_s_min": round(args.batch / max(pipe), 2),
        "images_per_s_max": round(args.batch / min(pipe), 2),
        "step_s_median": round(pipe_med, 4),
        "cached_images_per_s": round(args.batch / cached_med, 2),
        "cached_images_per_s_min": round(args.batch / max(cached), 2),
        "cached_images_per_s_max": round(args.batch / min(cached), 2),
        "cached_step_s_median": round(cached_med, 4),
        "pipeline_fraction": round(1.0 - cached_med / pipe_med, 4),
        "cpu_s_per_step_median": round(statistics.median(results["pipeline"][1]), 4),
        "cached_cpu_s_per_step_median": round(statistics.median(results["cached"][1]), 4),
        "pipeline_cpu_fraction": round(
            1.0 - statistics.median(results["cached"][1]) / statistics.median(results["pipeline"][1]), 4
        ),
        "first_fit_s": round(first_s, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "environment": step_bench.environment(),
    }
    return out


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    args = parse_args(argv)
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
