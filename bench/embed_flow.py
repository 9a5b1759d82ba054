"""The "Your own images" flow on real images, timed: a flat folder -> simsiam-pretrain -> simsiam-embed --neighbours.

scikit-learn's 1,797 handwritten digits (8x8, upsampled bilinearly to 16 px) are split
80/20, stratified, seed 0 (the split of bench/real_digits.py): the 1,437 training
digits go into one flat, unlabelled folder, the 360 others into a labelled hold-out
(class folders) that pretraining never sees. Then, as a user runs it:

1. simsiam-pretrain --flagfile=flags/small_images.cfg on the flat folder (evaluation is
   skipped: no labels);
2. simsiam-embed --init_from=<run> on the hold-out with --neighbours=5 (embeddings.npz,
   neighbours.csv, the contact sheet).

The flow's wall time is the two commands'. Then the neighbours' label agreement on the
hold-out (precision at 5: the share of each image's 5 nearest neighbours, by cosine,
with its digit) for the SimSiam encoder, the same encoder at random init and raw pixels
(standardised with the flat folder's pixel mean and std).

    python bench/embed_flow.py                           # ~5 min on 2 idle CPU cores
    python bench/embed_flow.py --quick                   # a smoke run (30 steps)
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]
import real_digits  # noqa: E402

K = 5
IMAGE_SIZE = 16


def write_folders(out):
    """<out>/flat/<index>.png (training digits, no labels) and <out>/holdout/<digit>/<index>.png."""
    import tensorflow as tf

    images, labels, train, test = real_digits.digits_split()
    big = tf.image.resize(images[..., None].astype(np.float32), [IMAGE_SIZE, IMAGE_SIZE], method="bilinear")
    big = tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8).numpy()
    for i in train:
        path = os.path.join(out, "flat", f"{i:04d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(big[i]))
    for i in test:
        path = os.path.join(out, "holdout", str(labels[i]), f"{i:04d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(big[i]))
    return len(train), len(test)


def tool(name, *args):
    """Runs `simsiam-<name>` as a user would; returns its wall time in seconds."""
    started = time.time()
    subprocess.run([sys.executable, "-m", f"simsiam_tf.cli.{name}", *args], cwd=ROOT, check=True)
    return time.time() - started


def precision_at_k(features, labels, k=K):
    from simsiam_tf import NeighbourIndex
    from simsiam_tf.runs.embed import label_agreement

    indices, _ = NeighbourIndex(features).neighbours_of_all(k)
    return label_agreement(labels, indices)


def baselines(out, run_dir):
    """Precision at K on the hold-out of the run's encoder at random init and of standardised raw pixels."""
    import tensorflow as tf

    from simsiam_tf import builders, config, data
    from simsiam_tf.config import flags as config_flags
    from simsiam_tf.runs.embed import RunEncoder

    run_config = config_flags.config_from_flags(
        config.PretrainConfig, config_flags.read_flags_file(os.path.join(run_dir, "flags.cfg"))
    )
    holdout = data.load_source("folder", split="all", data_dir=os.path.join(out, "holdout"))
    flat = data.load_source("folder", split="all", data_dir=os.path.join(out, "flat"))
    encoder = RunEncoder(run_dir)
    encoder.encoder = builders.build_encoder(
        run_config.model, tf.distribute.get_strategy(), run_config.runtime.seed, run_config.data.image_size
    )
    random_x, labels = map(np.concatenate, zip(*encoder.batches(holdout, 256)))

    def pixels(source):
        batches = data.make_eval_dataset(source, 512, IMAGE_SIZE)
        return np.concatenate([x.numpy().reshape(len(x), -1) for x, _ in batches])

    train_pixels = pixels(flat)
    mean, std = train_pixels.mean(0), train_pixels.std(0) + 1e-6
    return {
        "random_init": precision_at_k(random_x, labels),
        "pixels": precision_at_k((pixels(holdout) - mean) / std, labels),
    }


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/embed_flow")
    parser.add_argument("--quick", action="store_true", help="30 pretraining steps: a smoke run")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    num_flat, num_holdout = write_folders(out)
    run_dir, embed_dir = os.path.join(out, "run"), os.path.join(out, "embed")
    load_before = os.getloadavg()
    steps = ["--train_steps=30"] if args.quick else []
    pretrain_seconds = tool(
        "pretrain",
        "--flagfile=flags/small_images.cfg",
        "--dataset=folder",
        f"--data_dir={os.path.join(out, 'flat')}",
        f"--model_dir={run_dir}",
        "--verbose=2",
        *steps,
    )
    embed_seconds = tool(
        "embed",
        f"--init_from={run_dir}",
        "--dataset=folder",
        f"--data_dir={os.path.join(out, 'holdout')}",
        f"--model_dir={embed_dir}",
        f"--neighbours={K}",
    )
    load_after = os.getloadavg()
    embed_metrics = json.load(open(os.path.join(embed_dir, "metrics.json")))
    pretrain_metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    report = {
        "images": {"flat_unlabelled": num_flat, "labelled_holdout": num_holdout, "image_size": IMAGE_SIZE},
        "pretrain_seconds": round(pretrain_seconds, 1),
        "embed_seconds": round(embed_seconds, 1),
        "flow_seconds": round(pretrain_seconds + embed_seconds, 1),
        "steps": pretrain_metrics["step"],
        "evaluation_skipped": pretrain_metrics.get("evaluation_skipped"),
        f"precision_at_{K}": {"simsiam": embed_metrics[f"neighbour_label_agreement_at_{K}"], **baselines(out, run_dir)},
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "contact_sheet": os.path.join(embed_dir, "neighbours.png"),
    }
    with open(os.path.join(out, "embed_flow.json"), "w") as f:
        json.dump(report, f, indent=2)
    p = report[f"precision_at_{K}"]
    print(
        f"\nflow wall time {report['flow_seconds'] / 60:.1f} min (pretrain {pretrain_seconds:.0f} s, "
        f"{report['steps']} steps; embed {embed_seconds:.0f} s) on {report['cpu']} x{report['cores']}, load "
        f"{report['load_average_before'][0]:.1f} -> {report['load_average_after'][0]:.1f}\n"
        f"precision at {K} on the {num_holdout} held-out digits: SimSiam {p['simsiam']:.3f}, "
        f"random init {p['random_init']:.3f}, raw pixels {p['pixels']:.3f}"
    )
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
