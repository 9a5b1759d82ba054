"""What `--deterministic` costs: steps/s of the same tiny pretraining run with and without it.

    python bench/determinism_cost.py --repeats 2

Each run is `simsiam-pretrain` in its own process (op determinism cannot be turned off
again in a process), alternating without/with; steps/s is the run's steps over its
`train_seconds` from metrics.json (the fit, first-step tracing included, as a user
sees it). Prints one line per run and the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = [
    "--dataset=synthetic",
    "--num_train_examples=512",
    "--image_size=16",
    "--backbone=resnet18_cifar",
    "--width_multiplier=0.125",
    "--dim=64",
    "--pred_dim=16",
    "--batch_size=32",
    "--base_lr=0.3",
    "--epochs=4",
    "--checkpoint_every_steps=1000",
    "--evaluate=false",
    "--knn_every=0",
    "--export=false",
    "--verbose=0",
]


def steps_per_second(model_dir, deterministic):
    command = [sys.executable, "-m", "simsiam_tf.cli.pretrain", f"--model_dir={model_dir}", *FLAGS]
    command.append(f"--deterministic={'true' if deterministic else 'false'}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    return metrics["step"] / metrics["train_seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rates = {False: [], True: []}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            for deterministic in (False, True):
                rate = steps_per_second(os.path.join(work, f"{repeat}-{deterministic}"), deterministic)
                rates[deterministic].append(rate)
                print(f"--deterministic={str(deterministic).lower()}: {rate:.2f} steps/s", flush=True)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median: {off:.2f} steps/s without, {on:.2f} with --deterministic ({on / off:.2f}x)")


if __name__ == "__main__":
    main()
