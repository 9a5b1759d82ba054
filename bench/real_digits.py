"""Real images: SimSiam with flags/small_images.cfg on scikit-learn's handwritten digits, against random init and pixels.

The digits (1,797 real 8x8 images, 0-16 grey levels) are written out as a folder:
`<out>/digits/{train,test}/<digit>/<index>.png`, a stratified 80/20 split with seed 0,
upsampled bilinearly to --image_size. Then, all through the package's Python API:

1. simsiam-pretrain with flags/small_images.cfg (its --evaluate gives kNN top-1 of the
   SimSiam encoder, the same encoder at random init and raw pixels);
2. simsiam-linear with --compare_baselines at 10 labels per class and at all labels;
3. simsiam-verify with flags/verify_small_images.cfg (the cosine of the frozen
   encoder's features; 10 labelled images per class set the threshold), open set and
   closed set, with the same verifier on the random-init encoder and on raw pixels beside.

Prints a markdown table and writes it with every figure to <out>/real_digits.json.
`--quick` shrinks every stage to a smoke run (a test runs it).

    python bench/real_digits.py                       # ~10-15 min on 2 CPU cores
    python bench/real_digits.py --quick --out=/tmp/rd

The 28 px mode (`--npz PATH` with `images` uint8 and `labels`, or `--folder PATH` of class
sub-folders) runs the protocol of bench/small_images_eval.py instead: a stratified split
with `--holdout` of the images held out (`--seed`), pretraining on the rest with
`--recipe` (default flags/small_images_28.cfg; `--set name=value` overrides a flag; `--recipe` also picks the default mode's),
logistic regression on the exported `embed` features at 10 labels per class (5 draws)
and all labels, kNN, with random init and raw pixels beside. `--tune` evaluates on an
inner validation part of the training part instead, leaving the held-out part unseen.

    python bench/real_digits.py --npz digits28.npz --holdout 0.2 --seed 0 --out=outputs/d28
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "flags", "small_images.cfg")
RECIPE_28 = os.path.join(ROOT, "flags", "small_images_28.cfg")
VERIFY_RECIPE = os.path.join(ROOT, "flags", "verify_small_images.cfg")
LABELS_PER_CLASS = 10


def digits_split(seed=0):
    """(images uint8 [N, 8, 8], labels, train indices, test indices): sklearn's digits, 80/20 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    index = np.arange(len(images))
    train, test = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=seed)
    return images, digits.target.astype(np.int64), np.sort(train), np.sort(test)


def write_digits(folder, image_size):
    """Writes the split as PNG class folders under `folder`; returns (num train, num test)."""
    import tensorflow as tf

    images, labels, train, test = digits_split()
    big = tf.image.resize(images[..., None].astype(np.float32), [image_size, image_size], method="bilinear")
    big = tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8).numpy()
    for split, indices in (("train", train), ("test", test)):
        for i in indices:
            path = os.path.join(folder, split, str(labels[i]), f"{i:04d}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tf.io.write_file(path, tf.io.encode_png(big[i]))
    return len(train), len(test)


def recipe_config(config_cls, path, **changes):
    from simsiam_tf import config as config_lib
    from simsiam_tf.config import flags as config_flags

    return config_lib.replace(config_flags.config_from_flags(config_cls, config_flags.read_flags_file(path)), **changes)


def pretrain(data_dir, run_dir, quick, recipe=RECIPE):
    from simsiam_tf import config as config_lib
    from simsiam_tf.runs import pretrain as pretrain_run

    changes = {
        "data.dataset": "folder",
        "data.data_dir": data_dir,
        "runtime.model_dir": run_dir,
        "runtime.verbose": 2,
        "evaluate": True,
        "export": False,
        "knn_every": 0,
    }
    if quick:
        changes.update(
            {
                "train_steps": None,
                "epochs": 1,
                "model.width_multiplier": 0.125,
                "probe_epochs": 2,
                "data.num_train_examples": 320,
                "data.num_eval_examples": 100,
            }
        )
    config = recipe_config(config_lib.PretrainConfig, recipe, **changes)
    return config, pretrain_run.run(config)


def linear(run_flags, out_dir, labels_per_class, quick):
    from simsiam_tf import config as config_lib
    from simsiam_tf.runs import linear as linear_run

    run_dir = run_flags.runtime.model_dir

    changes = {
        "data": run_flags.data,
        "model.backbone": run_flags.model.backbone,
        "model.width_multiplier": run_flags.model.width_multiplier,
        "runtime.model_dir": out_dir,
        "runtime.verbose": 0,
        "runtime.seed": run_flags.runtime.seed,
        "compare_baselines": True,
        "labels_per_class": labels_per_class,
    }
    if quick:
        changes["epochs"] = 1
    return linear_run.run(config_lib.replace(config_lib.LinearConfig(init_from=run_dir), **changes))


def verify(run_flags, out_dir, closed_set, quick):
    from simsiam_tf import config as config_lib
    from simsiam_tf.runs import verify as verify_run

    run_dir = run_flags.runtime.model_dir

    changes = {
        "data.dataset": "folder",
        "data.data_dir": run_flags.data.data_dir,
        "data.image_size": run_flags.data.image_size,
        "model.backbone": run_flags.model.backbone,
        "model.width_multiplier": run_flags.model.width_multiplier,
        "runtime.model_dir": out_dir,
        "runtime.verbose": 0,
        "init_from": run_dir,
        "closed_set": closed_set,
    }
    if quick:
        changes.update(
            {"epochs": 1, "steps_per_epoch": 2, "num_val_pairs": 100, "num_eval_pairs": 100, "num_trials": 20}
        )
    return verify_run.run(recipe_config(config_lib.VerifyConfig, VERIFY_RECIPE, **changes))


ENCODERS = (
    ("SimSiam (the recipe)", ""),
    ("random init, same encoder", "random_init_"),
    ("raw pixels (standardised)", "pixels_"),
)
COLUMNS = (
    ("linear probe, 10 labels/class", "probe_10", "top1"),
    ("linear probe, all labels", "probe_all", "top1"),
    ("kNN top-1 (k=200, weighted)", "pretrain", "knn_top1"),
    ("verification ROC-AUC, closed set", "verify_closed", "roc_auc"),
    ("verification ROC-AUC, open set", "verify_open", "roc_auc"),
)


def table(stages):
    """Markdown table: one row per encoder, one column per figure; then which cells SimSiam does not win."""
    lines = [
        "| " + " | ".join(["real digits (360 test images)"] + [c[0] for c in COLUMNS]) + " |",
        "|---" + "|---:" * len(COLUMNS) + "|",
    ]
    for name, prefix in ENCODERS:
        cells = []
        for _, stage, key in COLUMNS:
            value = stages[stage].get(prefix + key)
            cells.append("-" if value is None else f"{value:.3f}")
        lines.append("| " + " | ".join([name] + cells) + " |")
    behind = []
    for label, stage, key in COLUMNS:
        ours = stages[stage].get(key)
        for name, prefix in ENCODERS[1:]:
            other = stages[stage].get(prefix + key)
            if ours is not None and other is not None and ours <= other:
                behind.append(
                    f"{label}: SimSiam {ours:.3f} is not ahead of {name.split(',')[0].split(' (')[0]} {other:.3f}"
                )
    return "\n".join(lines), behind


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("outputs", "real_digits"), help="Working and output folder.")
    parser.add_argument("--quick", action="store_true", help="A smoke run: 1 epoch, tiny encoder, few steps.")
    parser.add_argument("--npz", help="28 px mode: a .npz with images (uint8 [N, H, W(, 3)]) and labels.")
    parser.add_argument("--folder", help="28 px mode: a folder of class sub-folders of same-size images.")
    parser.add_argument(
        "--recipe",
        help="The pretraining flagfile (default flags/small_images.cfg; flags/small_images_28.cfg in the 28 px mode).",
    )
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="28 px mode: a flag override.")
    parser.add_argument("--holdout", type=float, default=0.2, help="28 px mode: the held-out fraction.")
    parser.add_argument("--seed", type=int, default=0, help="28 px mode: the split's seed.")
    parser.add_argument("--tune", action="store_true", help="28 px mode: evaluate on an inner validation part.")
    args = parser.parse_args(argv)
    if args.npz or args.folder:
        return main_28(args)
    recipe = os.path.abspath(args.recipe or RECIPE)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        sys.exit("bench/real_digits.py needs scikit-learn (its bundled digits): pip install -e '.[bench]'")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # The tools run one after another in this process, each tracing its own functions: TensorFlow's
    # retracing advice is about loops that re-trace one function, not this.
    tf.get_logger().setLevel("ERROR")
    from simsiam_tf import config as config_lib
    from simsiam_tf.config import flags as config_flags
    from simsiam_tf.training import cpu

    image_size = config_flags.config_from_flags(
        config_lib.PretrainConfig, config_flags.read_flags_file(recipe)
    ).data.image_size
    out = os.path.abspath(args.out)
    data_dir = os.path.join(out, "digits")
    run_dir = os.path.join(out, "pretrain")
    started, cpu_started = time.time(), time.process_time()
    seconds, stages = {}, {}

    def timed(name, fn, *fn_args):
        t = time.time()
        result = fn(*fn_args)
        seconds[name] = round(time.time() - t, 1)
        print(f"[{name}] {seconds[name]:.0f} s", flush=True)
        return result

    if not os.path.isdir(os.path.join(data_dir, "test")):
        timed("write digits", write_digits, data_dir, image_size)
    run_flags, stages["pretrain"] = timed("pretrain", pretrain, data_dir, run_dir, args.quick, recipe)
    stages["probe_10"] = timed(
        "probe 10/class", linear, run_flags, os.path.join(out, "linear_10pc"), LABELS_PER_CLASS, args.quick
    )
    stages["probe_all"] = timed(
        "probe all labels", linear, run_flags, os.path.join(out, "linear_all"), None, args.quick
    )
    stages["verify_closed"] = timed(
        "verify closed", verify, run_flags, os.path.join(out, "verify_closed"), True, args.quick
    )
    stages["verify_open"] = timed("verify open", verify, run_flags, os.path.join(out, "verify_open"), False, args.quick)
    markdown, behind = table(stages)
    info = cpu.host()
    wall, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    machine = (
        f"{getattr(info, 'model_name', platform.processor())}, {os.cpu_count()} logical cores, "
        f"load average {load[0]:.1f}"
        if load
        else f"{os.cpu_count()} logical cores"
    )
    footer = (
        f"wall time {wall / 60:.1f} min (pretraining {seconds['pretrain'] / 60:.1f} min), process CPU time "
        f"{cpu_seconds / 60:.1f} min; {machine}" + ("; --quick smoke run" if args.quick else "")
    )
    print("\n" + markdown + "\n\n" + footer)
    for line in behind:
        print(f"not ahead: {line}")
    if not behind:
        print("SimSiam is ahead of random init and raw pixels in every column.")
    report = {
        "table": markdown,
        "not_ahead": behind,
        "footer": footer,
        "seconds": seconds,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "quick": args.quick,
        "stages": stages,
    }
    with open(os.path.join(out, "real_digits.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print("wrote", os.path.join(out, "real_digits.json"))
    return report


def main_28(args):
    """The 28 px mode: the protocol of bench/small_images_eval.py on a .npz or a class folder."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import small_images_eval as ev

    from simsiam_tf.training import cpu

    if args.npz and args.folder:
        sys.exit("give --npz or --folder, not both")
    images, labels = ev.load_npz(args.npz) if args.npz else ev.load_folder(args.folder)[:2]
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set takes NAME=VALUE (a flag of the recipe), got {item!r}")
        overrides[name.lstrip("-")] = value
    started = time.time()
    recipe = os.path.abspath(args.recipe or RECIPE_28)
    report = ev.evaluate(
        images,
        labels,
        recipe,
        os.path.abspath(args.out),
        overrides,
        args.holdout,
        args.seed,
        args.tune,
        args.quick,
    )
    source = args.npz or args.folder
    load = os.getloadavg()
    report.update(
        source=source,
        recipe=os.path.relpath(recipe, ROOT) if recipe.startswith(ROOT) else recipe,
        overrides=overrides,
        cpu=f"{getattr(cpu.host(), 'model_name', platform.processor())}, {os.cpu_count()} logical cores",
        load_average=[round(v, 2) for v in load],
        tensorflow=tf.__version__,
        wall_seconds=round(time.time() - started, 1),
    )
    print("\n" + ev.table(report, os.path.basename(source)))
    print(
        f"\npretraining {report['pretrain_wall_seconds'] / 60:.1f} min ({report['steps']} steps, "
        f"{report['num_train']} images); whole script {report['wall_seconds'] / 60:.1f} min; {report['cpu']}, "
        f"load average {load[0]:.2f}; TF {tf.__version__}" + ("; --quick smoke run" if args.quick else "")
    )
    with open(os.path.join(args.out, "real_digits_28.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(json.dumps({k: report[k] for k in ("part", "results", "pretrain_wall_seconds", "wall_seconds")}))
    return report


if __name__ == "__main__":
    main()
