"""The paper's collapse findings on the embedded synthetic set, on a CPU.

Runs the ablation recipes of flags/ (flags/ablation_baseline.cfg: SimSiam; and the
same with one switch changed) with the same seed and budget through
`simsiam_tf.runs.pretrain.run`, each with the kNN monitor every epoch and
on_collapse="warn", reads each run's history.json, and writes into --out:

  reproduce.png   the paper's Fig. 2 for these runs: training loss, normalised std of
                  the l2-normalised output z, and kNN top-1 per epoch, every run on
                  each panel;
  reproduce.json  settings, per-epoch histories, final figures, timings, versions;
  reproduce.md    a table: run, final loss, final z-std, final kNN top-1, collapsed?

  python bench/reproduce.py --out=docs   # = --epochs=8 --num_train_examples=1024 --batch_size=128 --knn_k=20

Runs: baseline, no_stop_gradient, no_predictor, fixed_random_predictor; --all adds
predictor_lr_decay (Table 1c: the predictor lr not decayed), no_bn, bn_hidden_only and
bn_predictor_output (Table 3a, 3b, 3d). Run directories go under --runs_dir (replaced unless
--resume). Needs matplotlib. See bench/REPRODUCE.md.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNS = ("baseline", "no_stop_gradient", "no_predictor", "fixed_random_predictor")
MORE_RUNS = ("predictor_lr_decay", "no_bn", "bn_hidden_only", "bn_predictor_output")
LABELS = {
    "baseline": "SimSiam",
    "no_stop_gradient": "w/o stop-grad",
    "no_predictor": "w/o predictor",
    "fixed_random_predictor": "fixed random predictor",
    "predictor_lr_decay": "predictor lr not decayed",
    "no_bn": "w/o BN in heads",
    "bn_hidden_only": "BN on hidden layers only",
    "bn_predictor_output": "BN on predictor output too",
    "simsiam": "SimSiam",
    "simtriplet": "SimTriplet",
}
# What the paper reports for each ablation (ImageNet, ResNet-50; linear accuracy, 100 epochs).
PAPER = {
    "baseline": "67.7% (Table 1 baseline, Fig. 2); std ~ 1/sqrt(d)",
    "no_stop_gradient": "0.1%: loss -1 at once, std -> 0 (Fig. 2)",
    "no_predictor": "0.1%, collapse (Table 1a)",
    "fixed_random_predictor": "1.5%, does not train (Table 1b)",
    "predictor_lr_decay": "68.1% not decayed vs 67.7% decayed (Table 1c)",
    "no_bn": "34.6%, no collapse (Table 3a)",
    "bn_hidden_only": "67.4% (Table 3b; 68.1% with BN on the projector output, 3c)",
    "bn_predictor_output": "unstable (Table 3d)",
}


def parse_args(argv=None, description=__doc__):
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15, help="epochs of every run")
    parser.add_argument("--num_train_examples", type=int, default=2048, help="synthetic training images")
    parser.add_argument("--num_eval_examples", type=int, default=1000, help="synthetic test images (kNN queries)")
    parser.add_argument("--batch_size", type=int, default=128, help="0: the recipe's (128)")
    parser.add_argument("--base_lr", type=float, default=0.0, help="every run's base lr; 0: the recipes' (0.3)")
    parser.add_argument("--knn_k", type=int, default=20, help="0: the recipe's (200, for 5000 images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--all", action="store_true", help="also the predictor-lr and the BN ablations (Table 1c, 3a, 3b, 3d)"
    )
    parser.add_argument("--runs", default=None, help="comma-separated subset of the runs (baseline first)")
    parser.add_argument("--runs_dir", default="runs/reproduce")
    parser.add_argument("--out", default="runs/reproduce", help="where the figure, JSON and table go")
    parser.add_argument("--resume", action="store_true", help="keep existing run directories (resume/re-report)")
    return parser.parse_args(argv)


def recipe_config(name):
    """The PretrainConfig of flags/ablation_<name>.cfg, defaults filled in as the CLI would."""
    from simsiam_tf import config as config_lib
    from simsiam_tf.config import flags as config_flags

    values = config_flags.read_flags_file(os.path.join(ROOT, "flags", f"ablation_{name}.cfg"))
    return config_flags.config_from_flags(config_lib.PretrainConfig, values)


def with_budget(config, args, model_dir, **changes):
    """`config` at the script's budget: same seed, epochs and data for every run."""
    from simsiam_tf import config as config_lib

    budget = {
        "runtime.model_dir": model_dir,
        "runtime.seed": args.seed,
        "runtime.verbose": 0,
        "epochs": args.epochs,
        "data.num_train_examples": args.num_train_examples,
        "data.num_eval_examples": args.num_eval_examples,
        "knn_every": 1,
        "on_collapse": "warn",
        "evaluate": False,
        "export": False,
    }
    if args.batch_size:
        budget["batch_size"] = args.batch_size
    if args.knn_k:
        budget["knn_k"] = args.knn_k
    if getattr(args, "base_lr", 0):
        budget["base_lr"] = args.base_lr
    budget.update(changes)
    return config_lib.replace(config, **budget)


def run_one(name, config, resume):
    """Pretrains one run; returns its record: settings, history, final figures, seconds."""
    from simsiam_tf.runs import pretrain

    model_dir = config.runtime.model_dir
    if os.path.isdir(model_dir) and not resume:
        shutil.rmtree(model_dir)
    started = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {config.epochs} epochs ...", flush=True)
    metrics = pretrain.run(config)
    seconds = time.time() - started
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    final = history[-1]
    record = {
        "name": name,
        "label": LABELS.get(name, name),
        "model_dir": model_dir,
        "seconds": round(seconds, 1),
        "history": history,
        "final": {
            "loss": final["loss"],
            "z_std": final["z_std"],
            "knn_top1": final.get("knn_top1"),
            "collapsed": bool(metrics.get("collapsed")),
            "collapsed_at_step": metrics.get("collapsed_at_step"),
        },
        "metrics": metrics,
    }
    print(
        f"  loss {final['loss']:.3f}  z-std {final['z_std']:.3f}  kNN {final.get('knn_top1', float('nan')):.3f}"
        f"  collapsed {record['final']['collapsed']}  ({seconds:.0f} s)",
        flush=True,
    )
    return record


def environment():
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_average_at_end": [round(v, 1) for v in os.getloadavg()],
    }


def num_classes(config):
    from simsiam_tf import builders

    return builders.load_eval_source(config).num_classes


def settings_of(config):
    m = config.model
    return {
        "dataset": config.data.dataset,
        "image_size": config.data.image_size,
        "num_train_examples": config.data.num_train_examples,
        "num_eval_examples": config.data.num_eval_examples,
        "backbone": m.backbone,
        "width_multiplier": m.width_multiplier,
        "dim": m.dim,
        "pred_dim": m.pred_dim,
        "projector_layers": m.projector_layers,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "base_lr": config.base_lr,
        "weight_decay": config.weight_decay,
        "seed": config.runtime.seed,
        "knn_k": config.knn_k,
        "collapse_threshold": config.collapse_threshold,
    }


def plot(records, path, title, num_classes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("loss", "training loss"), ("z_std", "std of l2-normalised z, x sqrt(d)"), ("knn_top1", "kNN top-1"))
    for ax, (key, label) in zip(axes, panels):
        for record in records:
            points = [(e["epoch"], e[key]) for e in record["history"] if e.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=record["label"])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].axhline(-1.0, color="grey", linestyle=":", linewidth=1)
    axes[1].set_ylim(-0.05, 1.1)
    axes[2].axhline(1.0 / num_classes, color="grey", linestyle=":", linewidth=1, label="chance")
    axes[2].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(records, paper=None):
    rows = [
        "| run | final loss | final z-std | final kNN top-1 | collapsed? |" + (" paper |" if paper else ""),
        "|---|---:|---:|---:|---|" + ("---|" if paper else ""),
    ]
    for r in records:
        f = r["final"]
        knn = "n/a" if f["knn_top1"] is None else f"{100 * f['knn_top1']:.1f}%"
        collapsed = f"yes (step {f['collapsed_at_step']})" if f["collapsed"] else "no"
        row = f"| {r['label']} | {f['loss']:.3f} | {f['z_std']:.3f} | {knn} | {collapsed} |"
        if paper:
            row += f" {paper.get(r['name'], '')} |"
        rows.append(row)
    return "\n".join(rows)


def write_outputs(out, stem, payload, markdown):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(markdown)


def main(argv=None):
    args = parse_args(argv)
    os.chdir(ROOT)
    names = RUNS + (MORE_RUNS if args.all else ())
    if args.runs:
        names = tuple(args.runs.split(","))
        unknown = set(names) - set(RUNS + MORE_RUNS)
        if unknown or names[0] != "baseline":
            raise SystemExit(f"--runs: baseline first, then any of {', '.join(RUNS[1:] + MORE_RUNS)}")
    configs = {n: with_budget(recipe_config(n), args, os.path.join(args.runs_dir, n)) for n in names}
    for config in configs.values():
        config.validate()
    started = time.time()
    records = [run_one(n, c, args.resume) for n, c in configs.items()]
    total = time.time() - started

    settings = settings_of(configs["baseline"])
    env = environment()
    title = (
        f"SimSiam ablations on the synthetic set: {settings['backbone']} x{settings['width_multiplier']}, "
        f"{settings['num_train_examples']} images, batch {settings['batch_size']}, {settings['epochs']} epochs, "
        f"seed {settings['seed']}"
    )
    os.makedirs(args.out, exist_ok=True)
    plot(records, os.path.join(args.out, "reproduce.png"), title, num_classes(configs["baseline"]))
    payload = {
        "settings": settings,
        "environment": env,
        "total_seconds": round(total, 1),
        "command": "python bench/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "runs": records,
    }
    command = payload["command"]
    markdown = "\n".join(
        [
            "# The paper's ablations on the synthetic set",
            "",
            f"`{command}` ({total / 60:.1f} min on {env['cpu_count']} CPU cores, {env['gpus']} GPUs; "
            f"TensorFlow {env['tensorflow']}, Keras {env['keras']}; load average at the end "
            f"{env['load_average_at_end'][0]}).",
            "",
            f"Settings: {json.dumps(settings)}. Every run: the same seed, data and budget; kNN top-1 (k={settings['knn_k']}) "
            "on the synthetic test split after every epoch; `on_collapse=warn`, collapse meaning a normalised z-std under "
            f"{settings['collapse_threshold']} for 3 consecutive checks. The paper column: ImageNet linear accuracy, "
            "ResNet-50, 100 epochs.",
            "",
            markdown_table(records, PAPER),
            "",
            "![loss, z-std and kNN accuracy per epoch](reproduce.png)",
            "",
        ]
    )
    write_outputs(args.out, "reproduce", payload, markdown)
    print(markdown_table(records))
    print(f"wrote {args.out}/reproduce.png, reproduce.json, reproduce.md ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
