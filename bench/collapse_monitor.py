"""The spectrum monitor measured: Zhang et al.'s centre/residual analysis, the dimensional-collapse alarm,
RankMe against the linear probe, and the monitor's cost.

Parts (--parts, comma-separated; each writes <out>/collapse_<part>.json):

  ablations  SimSiam (flags/ablation_baseline.cfg), without the predictor, with a fixed random
             predictor and without stop-gradient, at one short budget (--steps at --image_size on the
             synthetic set): the centre's share of the l2-normalised projector output and the
             residual's mean |off-diagonal correlation| at every spectrum check, the effective rank
             against the alarm's threshold, whether the complete- or the dimensional-collapse alarm
             fired. Writes collapse_ablations.png (needs matplotlib) for docs/.
  spearman   flags/small_images.cfg on scikit-learn's digits (a folder) and on the synthetic set, at
             several base learning rates (--lrs): at every checkpoint the projector output's effective
             rank (what --keep_best=rank reads) and the backbone's, and the linear-probe and kNN top-1 of
             the backbone; Spearman's rho across the checkpoints of each run and across the learning
             rates (final checkpoints).
  overhead   the embedded demo (flags/demo.cfg, no evaluation or export): the seconds the monitor
             spent against the training time, and whether the alarm fired.

    python bench/collapse_monitor.py --out=docs --parts=ablations,spearman,overhead
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ABLATIONS = ("baseline", "no_predictor", "fixed_random_predictor", "no_stop_gradient")
LABELS = {
    "baseline": "SimSiam",
    "no_predictor": "w/o predictor",
    "fixed_random_predictor": "fixed random predictor",
    "no_stop_gradient": "w/o stop-grad",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="ablations,spearman,overhead")
    parser.add_argument("--steps", type=int, default=400, help="training steps of each short run")
    parser.add_argument("--image_size", type=int, default=16)
    parser.add_argument("--num_train_examples", type=int, default=2048, help="synthetic training images")
    parser.add_argument("--num_eval_examples", type=int, default=512, help="synthetic test images")
    parser.add_argument("--spectrum_every", type=int, default=20, help="--spectrum_every_steps of the ablations")
    parser.add_argument("--checkpoint_every", type=int, default=50, help="spearman: steps between checkpoints")
    parser.add_argument("--lrs", default="0.02,0.06,0.2,0.6,1.5", help="spearman: base learning rates")
    parser.add_argument("--datasets", default="digits,synthetic", help="spearman: digits and/or synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="ablations: read the runs already in --runs_dir (their metrics.json and history.json) instead of "
        "training; the rank alarm's step is then the first check closing --collapse_patience checks under the "
        "threshold in the recorded history, the z-std alarm's the one the run recorded",
    )
    parser.add_argument("--runs_dir", default="runs/collapse_monitor")
    parser.add_argument("--out", default="runs/collapse_monitor")
    return parser.parse_args(argv)


def flagfile_config(path, **changes):
    from simsiam_tf import config as config_lib
    from simsiam_tf.config import flags as config_flags

    values = config_flags.read_flags_file(path)
    return config_lib.replace(config_flags.config_from_flags(config_lib.PretrainConfig, values), **changes)


def fresh(model_dir):
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    return model_dir


def machine():
    import tensorflow as tf

    from simsiam_tf.training import cpu

    info = cpu.host()
    return {
        "cpu": info.model_name,
        "cpu_family_model": f"{info.family}/{info.model}",
        "threads": info.threads,
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
    }


# --- ablations --------------------------------------------------------------------------------------------


def run_ablation(name, args):
    from simsiam_tf.evaluation.monitor import CollapseMonitor
    from simsiam_tf.runs import pretrain

    config = flagfile_config(
        os.path.join(ROOT, "flags", f"ablation_{name}.cfg"),
        **{
            "runtime.model_dir": os.path.join(args.runs_dir, "ablations", name),
            "runtime.seed": args.seed,
            "runtime.verbose": 0,
            "data.image_size": args.image_size,
            "data.num_train_examples": args.num_train_examples,
            "data.num_eval_examples": args.num_eval_examples,
            "train_steps": args.steps,
            "knn_every": 0,
            "spectrum_every_steps": args.spectrum_every,
            "on_collapse": "warn",
            "evaluate": False,
            "export": False,
        },
    )
    if args.reuse:
        return reused_ablation(name, config)
    started = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] ablation {name}: {args.steps} steps", flush=True)
    # The z-std alarm as the job sets it up, to see when it would fire beside the spectrum's.
    z_std_alarm = CollapseMonitor(
        threshold=config.collapse_threshold,
        patience=config.collapse_patience,
        action="ignore",
        check_every=min(config.log_every_steps, args.num_train_examples // config.batch_size),
        running_mean=True,
    )
    fresh(config.runtime.model_dir)
    metrics = pretrain.run(config, callbacks=[z_std_alarm])
    with open(os.path.join(config.runtime.model_dir, "history.json")) as f:
        history = json.load(f)
    spectrum = metrics["spectrum"]
    return _record(
        name,
        config,
        metrics,
        history,
        seconds=round(time.time() - started, 1),
        rank_alarm_step=spectrum.get("alarm", {}).get("step"),
        rank_alarm_message=spectrum.get("alarm", {}).get("message", ""),
        z_std_alarm_step=z_std_alarm.collapsed_at_step,
        z_std_alarm_message=z_std_alarm.message,
    )


def _record(name, config, metrics, history, **fields):
    """The JSON record of one ablation run: what every run reports, then `fields`."""
    spectrum = metrics["spectrum"]
    limit = spectrum["projector"]["rank_limit"]
    return {
        "name": name,
        "label": LABELS[name],
        "train_seconds": metrics["train_seconds"],
        "spectrum_seconds": spectrum["seconds"],
        "spectrum_checks": spectrum["checks"],
        "final_z_std": history[-1]["z_std"],
        "final_loss": history[-1]["loss"],
        "rank_limit": limit,
        "rank_threshold": config.rank_collapse_fraction * limit,
        "rank_fraction": config.rank_collapse_fraction,
        "history": spectrum["history"],
        "final_spectrum": spectrum["projector"]["spectrum"],
        **fields,
    }


def reused_ablation(name, config):
    def read(file):
        with open(os.path.join(config.runtime.model_dir, file)) as f:
            return json.load(f)

    metrics, history = read("metrics.json"), read("history.json")
    spectrum = metrics["spectrum"]
    limit = spectrum["projector"]["rank_limit"]
    threshold = config.rank_collapse_fraction * limit
    below, rank_alarm_step = 0, None
    for check in spectrum["history"][:-1]:  # the end-of-training check does not count
        below = below + 1 if check["projector"]["effective_rank"] < threshold else 0
        if below >= config.collapse_patience and rank_alarm_step is None:
            rank_alarm_step = check["step"]
    message = metrics.get("collapse_message", "")
    z_std_alarm = message.startswith("representation collapsed")
    return _record(
        name,
        config,
        metrics,
        history,
        reused=True,
        rank_alarm_step=rank_alarm_step,
        z_std_alarm_step=metrics.get("collapsed_at_step") if z_std_alarm else None,
        z_std_alarm_message=message if z_std_alarm else "",
    )


def plot_ablations(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("center_share", "centre's share ||o||^2 of the projector output"),
        ("residual_correlation", "residual: mean |off-diagonal correlation|"),
        ("effective_rank", "effective rank of the projector output"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, title) in zip(axes, panels):
        for record in records:
            steps = [h["step"] for h in record["history"]]
            ax.plot(
                steps,
                [h["projector"][key] for h in record["history"]],
                marker="o",
                markersize=2.5,
                label=record["label"],
            )
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[2].axhline(records[0]["rank_threshold"], color="grey", linestyle=":", linewidth=1, label="alarm threshold")
    axes[2].set_yscale("log")
    axes[0].set_ylim(-0.02, 1.02)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ablations(args):
    records = [run_ablation(name, args) for name in ABLATIONS]
    try:
        plot_ablations(records, os.path.join(args.out, "collapse_ablations.png"))
    except ImportError:
        print("matplotlib is not installed: no figure", flush=True)
    for r in records:
        last = r["history"][-1]["projector"]
        print(
            f"  {r['label']:24s} z-std {r['final_z_std']:.3f}  centre share {last['center_share']:.3f}  "
            f"residual corr {last['residual_correlation']:.3f}  eff. rank {last['effective_rank']:.1f} "
            f"(alarm below {r['rank_threshold']:.1f})  rank alarm at step {r['rank_alarm_step']}, "
            f"z-std alarm at step {r['z_std_alarm_step']}",
            flush=True,
        )
    return {"runs": records}


# --- spearman ---------------------------------------------------------------------------------------------


def save_backbone_every_checkpoint(folder):
    import keras

    class SaveBackbone(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step % self.every == 0:
                self.save(step)

        def on_train_end(self, logs=None):
            self.save(int(self.model.optimizer.iterations.numpy()))

        def save(self, step):
            self.model.backbone.save_weights(os.path.join(folder, f"backbone-{step}.weights.h5"))

    os.makedirs(folder, exist_ok=True)
    return SaveBackbone()


def spearman_run(dataset, lr, args):
    from simsiam_tf.builders import build_encoder
    from simsiam_tf.runs import pretrain
    from simsiam_tf.runs.pretrain import eval_datasets, evaluate_encoder
    from simsiam_tf.training import distribute

    run_dir = fresh(os.path.join(args.runs_dir, "spearman", f"{dataset}_lr{lr:g}"))
    changes = {
        "runtime.model_dir": run_dir,
        "runtime.seed": args.seed,
        "runtime.verbose": 0,
        "data.image_size": args.image_size,
        "train_steps": args.steps,
        "base_lr": lr,
        "checkpoint_every_steps": args.checkpoint_every,
        "spectrum_every_steps": args.checkpoint_every,
        "keep_best": "rank",
        "on_collapse": "warn",
        "evaluate": False,
        "export": False,
        "knn_every": 0,
    }
    if dataset == "digits":
        changes.update({"data.dataset": "folder", "data.data_dir": os.path.join(args.runs_dir, "digits")})
    else:
        changes.update(
            {
                "data.dataset": "synthetic",
                "data.num_train_examples": args.num_train_examples,
                "data.num_eval_examples": args.num_eval_examples,
            }
        )
    config = flagfile_config(os.path.join(ROOT, "flags", "small_images.cfg"), **changes)
    saver = save_backbone_every_checkpoint(os.path.join(run_dir, "backbones"))
    saver.every = args.checkpoint_every
    print(f"[{time.strftime('%H:%M:%S')}] {dataset} lr {lr:g}: {args.steps} steps", flush=True)
    started = time.time()
    metrics = pretrain.run(config, callbacks=[saver])
    seconds = time.time() - started
    scores = {r["step"]: r["effective_rank"] for r in metrics["checkpoint_scores"]}
    backbone_rank = {h["step"]: h["backbone"]["effective_rank"] for h in metrics["spectrum"]["history"]}

    from simsiam_tf.builders import load_eval_source, load_train_source

    source = load_train_source(config)
    sets = eval_datasets(config, source, load_eval_source(config))
    strategy = distribute.strategy_for(config.runtime)
    checkpoints = []
    for step in sorted(scores):
        path = os.path.join(run_dir, "backbones", f"backbone-{step}.weights.h5")
        if not os.path.exists(path):
            continue
        with strategy.scope():
            encoder = build_encoder(config.model, strategy, config.runtime.seed)
        encoder.load_weights(path)
        scored = evaluate_encoder(encoder, *sets, source.num_classes, config.knn_k, config.knn_temperature, 30, 0)
        checkpoints.append({"step": step, "rank": scores[step], "backbone_rank": backbone_rank.get(step), **scored})
    return {
        "dataset": dataset,
        "base_lr": lr,
        "seconds": round(seconds, 1),
        "collapse_message": metrics.get("collapse_message", ""),
        "kept_step": metrics["kept_checkpoint"]["step"],
        "checkpoints": checkpoints,
    }


def spearman(x, y):
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def correlations(runs):
    """Spearman's rho of rank vs probe: within each run (its checkpoints), and across the learning rates."""
    out = {"within_runs": [], "across_lrs": {}}
    for run in runs:
        cps = run["checkpoints"]
        out["within_runs"].append(
            {
                "dataset": run["dataset"],
                "base_lr": run["base_lr"],
                "rho_rank_probe": spearman([c["rank"] for c in cps], [c["probe_top1"] for c in cps]),
                "rho_backbone_rank_probe": spearman(
                    [c["backbone_rank"] for c in cps if c["backbone_rank"] is not None],
                    [c["probe_top1"] for c in cps if c["backbone_rank"] is not None],
                ),
                "kept_step": run["kept_step"],
                "probe_at_kept": next(c["probe_top1"] for c in cps if c["step"] == run["kept_step"]),
                "probe_at_last": cps[-1]["probe_top1"],
                "probe_best": max(c["probe_top1"] for c in cps),
            }
        )
    for dataset in sorted({r["dataset"] for r in runs}):
        finals = [r["checkpoints"][-1] for r in runs if r["dataset"] == dataset]
        out["across_lrs"][dataset] = {
            "rho_rank_probe": spearman([c["rank"] for c in finals], [c["probe_top1"] for c in finals]),
            "rho_backbone_rank_probe": spearman(
                [c["backbone_rank"] for c in finals], [c["probe_top1"] for c in finals]
            ),
        }
    return out


def spearman_part(args):
    from real_digits import write_digits

    if "digits" in args.datasets.split(","):
        write_digits(fresh(os.path.join(args.runs_dir, "digits")), args.image_size)
    runs = [
        spearman_run(dataset, float(lr), args) for dataset in args.datasets.split(",") for lr in args.lrs.split(",")
    ]
    result = {"runs": runs, "spearman": correlations(runs)}
    print(json.dumps(result["spearman"], indent=1), flush=True)
    return result


# --- overhead ---------------------------------------------------------------------------------------------


def overhead(args):
    from simsiam_tf.runs import pretrain

    config = flagfile_config(
        os.path.join(ROOT, "flags", "demo.cfg"),
        **{
            "runtime.model_dir": fresh(os.path.join(args.runs_dir, "demo")),
            "runtime.verbose": 0,
            "evaluate": False,
            "export": False,
        },
    )
    print(f"[{time.strftime('%H:%M:%S')}] the demo, no evaluation or export", flush=True)
    metrics = pretrain.run(config)
    spectrum = metrics["spectrum"]
    result = {
        "train_seconds": metrics["train_seconds"],
        "steps": metrics["step"],
        "spectrum_seconds": spectrum["seconds"],
        "spectrum_checks": spectrum["checks"],
        "spectrum_images": config.spectrum_images,
        "spectrum_every_steps": config.spectrum_every_steps,
        "overhead_percent": round(100 * spectrum["seconds"] / (metrics["train_seconds"] - spectrum["seconds"]), 2),
        "collapsed": metrics["collapsed"],
        "final_projector": {k: v for k, v in spectrum["projector"].items() if k != "spectrum"},
        "final_backbone": {k: v for k, v in spectrum["backbone"].items() if k != "spectrum"},
        "history": spectrum["history"],
    }
    print(
        f"  {result['spectrum_checks']} checks, {result['spectrum_seconds']} s of {result['train_seconds']} s "
        f"training: {result['overhead_percent']}%; alarm: {result['collapsed']}",
        flush=True,
    )
    return result


PARTS = {"ablations": ablations, "spearman": spearman_part, "overhead": overhead}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for part in args.parts.split(","):
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}: choose from {', '.join(PARTS)}")
        started = time.time()
        result = PARTS[part](args)
        result.update(
            settings={k: v for k, v in vars(args).items() if k not in ("out", "runs_dir", "parts")},
            machine=machine(),
            seconds=round(time.time() - started, 1),
        )
        path = os.path.join(args.out, f"collapse_{part}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {path} ({result['seconds'] / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
