"""A thousand bad files: a folder of good images mixed with every hostile kind of tests/data/hostile_images.py
(truncated, bit-flipped, empty, not an image, decompression bombs, a directory named like an image, link
loops, FIFOs; and valid but unusual images), loaded as every folder tool loads it.

Measured: the time of `load_source(..., on_corrupt="skip")` (header checks, then one decode of every
file left), of one pass of the evaluation pipeline over the images kept, and of
`on_corrupt="error"` up to its first error; the process's peak memory (ru_maxrss) before and after,
and the skip report by reason. Ends on one JSON line.

    python bench/hostile_folder.py                            # 1,008 bad files among 2,000 good ones
    python bench/hostile_folder.py --bad_copies 1 --good_per_class 2   # a smoke run
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "data")]
from hostile_images import SKIPPED, make_hostile_folder  # noqa: E402


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad_copies", type=int, default=84, help="copies of every bad kind (84: 1,008 files)")
    parser.add_argument("--good_per_class", type=int, default=1000, help="good images in each of the 2 classes")
    parser.add_argument("--size", type=int, default=32, help="side of the images in pixels")
    parser.add_argument("--out", default=None, help="where to write the folder (default: a temporary one)")
    args = parser.parse_args(argv)

    from simsiam_tf import data
    from simsiam_tf.training.cpu import host

    out = args.out or tempfile.mkdtemp(prefix="hostile-")
    started = time.time()
    folder = make_hostile_folder(
        os.path.join(out, "images"), good_per_class=args.good_per_class, copies=args.bad_copies, size=args.size
    )
    written = time.time() - started
    warm = make_hostile_folder(os.path.join(out, "warm"), good_per_class=2, kinds=(), size=args.size)
    for _ in data.make_eval_dataset(data.load_source("folder", data_dir=warm.root), 64, args.size):
        pass
    before = peak_mb()

    started = time.time()
    source = data.load_source("folder", data_dir=folder.root, on_corrupt="skip")
    load_seconds = time.time() - started
    started = time.time()
    images = sum(int(batch.shape[0]) for batch, _ in data.make_eval_dataset(source, 64, args.size))
    pass_seconds = time.time() - started
    started = time.time()
    try:
        data.load_source("folder", data_dir=folder.root, on_corrupt="error")
        error = None
    except ValueError as err:
        error = str(err).split(": ", 1)[1].split(" (")[0]  # "image file PATH: REASON (detail) ..."
    error_seconds = time.time() - started

    report, info = source.skipped, host()
    result = {
        "files_listed": report.total,
        "bad_files": sum(1 for k in folder.kinds.values() if k in SKIPPED),
        "skipped": len(report.bad),
        "skipped_by_reason": report.counts(),
        "expected_by_reason": folder.skipped_counts(),
        "images_kept": source.num_examples,
        "images_in_eval_pass": images,
        "write_seconds": round(written, 2),
        "load_skip_seconds": round(load_seconds, 2),
        "eval_pass_seconds": round(pass_seconds, 2),
        "error_mode_seconds": round(error_seconds, 2),
        "error_mode_reason": error,
        "peak_rss_mb_before": round(before, 1),
        "peak_rss_mb_after": round(peak_mb(), 1),
        "environment": {"cpu": info.model_name, "cpu_cores": info.threads, **info.summary()},
    }
    print(report.summary())
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
