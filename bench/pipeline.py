"""Throughput of the two-view augmentation pipeline alone, per CPU core.

Runs `simsiam_tf.data.make_pretrain_dataset` on the synthetic set with the library's
`TwoViewAugment` (the paper's CIFAR recipe, no blur, up to 64 px; the ImageNet recipe
with blur above) and pulls batches as fast as it gives them; no model runs.

  python bench/pipeline.py --image_size 32 224 --batch 128

Throughput is taken over `--windows` windows of `--batches_per_window` batches after
`--warmup` batches (median, min, max over the windows). "Per core" is given twice:
images/s divided by the cores the process may use, and images per CPU-second the
process actually spent (all threads; the pipeline's parallel maps use every core).
The last output line is JSON: {"results": [one entry per image size], ...}; each
entry has `images_per_s` and `images_per_cpu_s`.

`--source jpeg` instead measures from JPEG files, side by side with the reference's
PIL loader, each contender pinned to one core (see `jpeg_bench.py`):

  python bench/pipeline.py --source jpeg --rounds 7
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, nargs="+", default=[32, 224])
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="images per batch (each gives two views); default 128, 32 with --source jpeg",
    )
    parser.add_argument("--num_examples", type=int, default=1024, help="synthetic images to generate per size")
    parser.add_argument(
        "--recipe",
        default="auto",
        choices=("auto", "cifar", "imagenet"),
        help="auto: cifar (no blur) up to 64 px, imagenet (blur) above",
    )
    parser.add_argument("--warmup", type=int, default=3, help="batches pulled before timing")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--batches_per_window", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=0, help="tf.data private threadpool size; 0 keeps the default (shared pool)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--source",
        default="synthetic",
        choices=("synthetic", "jpeg"),
        help="synthetic: in-memory images, this process; jpeg: a generated JPEG folder, "
        "contenders side by side on one core each",
    )
    jpeg = parser.add_argument_group("--source jpeg")
    jpeg.add_argument(
        "--contenders",
        nargs="+",
        default=["reference", "package", "fast"],
        help="reference, package, fast, or fast with options joined by ':' "
        "(union|per_view|full, noaa, batched, crops), e.g. fast:per_view:noaa",
    )
    jpeg.add_argument("--rounds", type=int, default=7, help="timed rounds of each contender, alternating")
    jpeg.add_argument("--batches_per_round", type=int, default=4)
    jpeg.add_argument("--num_images", type=int, default=256, help="JPEGs to generate")
    jpeg.add_argument("--jpeg_size", type=int, nargs=2, default=[500, 375], metavar=("WIDTH", "HEIGHT"))
    jpeg.add_argument("--quality", type=int, default=90)
    jpeg.add_argument("--core", type=int, default=None, help="the core every worker is pinned to (default: the last)")
    jpeg.add_argument("--serve_jpeg", default=None, help=argparse.SUPPRESS)
    jpeg.add_argument("--data_dir", default=None, help=argparse.SUPPRESS)
    # Kept for a uniform command line with the other bench scripts.
    parser.add_argument("--steps", type=int, default=None, help="alias of --windows")
    args = parser.parse_args(argv)
    if args.steps is not None:
        args.windows = args.steps
    if args.windows < 1 or args.batches_per_window < 1 or args.warmup < 0:
        parser.error("--windows and --batches_per_window must be at least 1, --warmup at least 0")
    if args.source == "jpeg":
        if args.batch is None:
            args.batch = 32
        if args.image_size == [32, 224]:
            args.image_size = [224]
        if len(args.image_size) != 1 or args.rounds < 1 or args.batches_per_round < 1:
            parser.error("--source jpeg takes one --image_size, --rounds and --batches_per_round of at least 1")
        return args
    if args.batch is None:
        args.batch = 128
    if args.num_examples < args.batch:
        parser.error("--num_examples must be at least --batch")
    return args


def make_augment(image_size, recipe):
    from simsiam_tf import augment

    if recipe == "cifar" or (recipe == "auto" and image_size <= 64):
        return augment.TwoViewAugment.cifar(image_size), "cifar"
    return augment.TwoViewAugment(image_size), "imagenet"


def measure(args, image_size):
    import tensorflow as tf

    from simsiam_tf import data

    source = data.load_source("synthetic", image_size=image_size, seed=args.seed, num_examples=args.num_examples)
    aug, recipe = make_augment(image_size, args.recipe)
    dataset = data.make_pretrain_dataset(source, args.batch, aug, seed=args.seed)
    if args.threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = args.threads
        dataset = dataset.with_options(options)
    iterator = iter(dataset)
    started = time.perf_counter()
    for _ in range(max(1, args.warmup)):
        v1, v2 = next(iterator)
    first_s = time.perf_counter() - started
    rates, cpu_rates = [], []
    for _ in range(args.windows):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.batches_per_window):
            v1, v2 = next(iterator)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        images = args.batch * args.batches_per_window
        rates.append(images / wall)
        cpu_rates.append(images / cpu)
    assert v1.shape == (args.batch, image_size, image_size, 3) and v2.dtype == tf.float32
    cores = len(os.sched_getaffinity(0))
    med = statistics.median(rates)
    return {
        "image_size": image_size,
        "recipe": recipe,
        "batch": args.batch,
        "images_per_s": round(med, 1),
        "images_per_s_min": round(min(rates), 1),
        "images_per_s_max": round(max(rates), 1),
        "images_per_s_per_core": round(med / cores, 1),
        "images_per_cpu_s": round(statistics.median(cpu_rates), 1),
        "images_per_cpu_s_min": round(min(cpu_rates), 1),
        "images_per_cpu_s_max": round(max(cpu_rates), 1),
        "warmup_s": round(first_s, 2),
    }


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    if args.serve_jpeg:
        import jpeg_bench

        return jpeg_bench.serve(args.serve_jpeg, args.data_dir, args.batch, args.image_size[0], args.seed, args.core)
    import step as step_bench

    if args.source == "jpeg":
        import jpeg_bench

        print(json.dumps(jpeg_bench.run(args, os.path.abspath(__file__), step_bench.environment())), flush=True)
        return

    results = [measure(args, size) for size in args.image_size]
    out = {
        "bench": "pipeline",
        "images_per_s": results[0]["images_per_s"],
        "results": results,
        "windows": args.windows,
        "batches_per_window": args.batches_per_window,
        "num_examples": args.num_examples,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "environment": step_bench.environment(),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
