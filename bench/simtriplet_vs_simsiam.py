"""SimTriplet against SimSiam on the tiled synthetic set, same seed and budget.

Pretrains flags/simtriplet_tiles.cfg (SimTriplet: a third view from an adjacent tile)
and the same recipe with --method=simsiam through `simsiam_tf.runs.pretrain.run` with
`evaluate=True`, which reports the kNN and linear-probe top-1 of the trained encoder and
of the same encoder at random init, on the tiles of the test split. Writes into --out
simtriplet.md (table), simtriplet.json and simtriplet.png (loss, z-std, kNN per epoch).

  python bench/simtriplet_vs_simsiam.py --out=docs   # = --epochs=6 --num_train_examples=1024 --batch_size=128 --knn_k=20

Options as bench/reproduce.py, plus --tiles_per_side and --neighbourhood.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reproduce  # noqa: E402

METHODS = ("simsiam", "simtriplet")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num_train_examples", type=int, default=2048, help="training tiles")
    parser.add_argument("--num_eval_examples", type=int, default=1000, help="test tiles")
    parser.add_argument("--batch_size", type=int, default=128, help="0: the recipe's (128)")
    parser.add_argument("--tiles_per_side", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--neighbourhood", default=None, choices=("4", "8", "group"), help="default: the recipe's")
    parser.add_argument("--probe_epochs", type=int, default=None, help="default: the recipe's (the demo's)")
    parser.add_argument("--base_lr", type=float, default=0.3, help="0: the recipe's (0.3, as the ablation recipes')")
    parser.add_argument("--knn_k", type=int, default=20, help="0: the recipe's (200, for 5000 tiles)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs_dir", default="runs/simtriplet_vs_simsiam")
    parser.add_argument("--out", default="runs/simtriplet_vs_simsiam")
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args(argv)


def recipe_config():
    from simsiam_tf import config as config_lib
    from simsiam_tf.config import flags as config_flags

    values = config_flags.read_flags_file(os.path.join(reproduce.ROOT, "flags", "simtriplet_tiles.cfg"))
    return config_flags.config_from_flags(config_lib.PretrainConfig, values)


def table(records):
    rows = [
        "| method | final loss | kNN top-1 | linear probe top-1 | random init kNN / probe | pretraining time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        m = r["metrics"]
        rows.append(
            f"| {r['label']} | {m['loss']:.3f} | {100 * m['knn_top1']:.1f}% | {100 * m['probe_top1']:.1f}% | "
            f"{100 * m['random_init_knn_top1']:.1f}% / {100 * m['random_init_probe_top1']:.1f}% | "
            f"{m['train_seconds']:.0f} s |"
        )
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    os.chdir(reproduce.ROOT)
    changes = {"evaluate": True, "knn_every": 1}
    for name in ("tiles_per_side", "neighbourhood", "probe_epochs"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    base = recipe_config()
    configs = {
        method: reproduce.with_budget(base, args, os.path.join(args.runs_dir, method), method=method, **changes)
        for method in METHODS
    }
    for config in configs.values():
        config.validate()
    started = time.time()
    records = [reproduce.run_one(method, config, args.resume) for method, config in configs.items()]
    total = time.time() - started

    settings = reproduce.settings_of(configs["simtriplet"])
    settings.update(
        tiles_per_side=configs["simtriplet"].tiles_per_side,
        neighbourhood=configs["simtriplet"].neighbourhood,
        probe_epochs=configs["simtriplet"].probe_epochs,
    )
    env = reproduce.environment()
    os.makedirs(args.out, exist_ok=True)
    title = (
        f"SimTriplet vs SimSiam on synthetic tiles ({settings['tiles_per_side']}x{settings['tiles_per_side']} per "
        f"image): {settings['backbone']} x{settings['width_multiplier']}, {settings['num_train_examples']} tiles, "
        f"batch {settings['batch_size']}, {settings['epochs']} epochs"
    )
    reproduce.plot(
        records, os.path.join(args.out, "simtriplet.png"), title, reproduce.num_classes(configs["simtriplet"])
    )
    command = "python bench/simtriplet_vs_simsiam.py " + " ".join(sys.argv[1:] if argv is None else argv)
    payload = {
        "settings": settings,
        "environment": env,
        "total_seconds": round(total, 1),
        "command": command,
        "runs": records,
    }
    markdown = "\n".join(
        [
            "# SimTriplet and SimSiam on the tiled synthetic set",
            "",
            f"`{command}` ({total / 60:.1f} min on {env['cpu_count']} CPU cores, {env['gpus']} GPUs; "
            f"TensorFlow {env['tensorflow']}, Keras {env['keras']}; load average at the end "
            f"{env['load_average_at_end'][0]}).",
            "",
            "Whole synthetic images are cut into a grid of tiles, each showing the image's class (one of 10 periodic "
            "patterns) with its own period, phase, tilt, polarity, colours and noise (`simsiam_tf.data.tiles.make_synthetic_tiles`). SimSiam sees two "
            "augmented views of a tile; SimTriplet (Liu et al., MICCAI 2021) also a view of an adjacent tile of the "
            f"same image ({settings['neighbourhood']}-neighbourhood). Same seed, data, model and budget; kNN "
            f"(k={settings['knn_k']}) and linear probe ({settings['probe_epochs']} epochs on frozen features) on the "
            "test tiles; the random-init columns are the same encoder before training. SimTriplet's loss has four "
            "halved terms, so it lies in [-2, 2] where SimSiam's lies in [-1, 1].",
            "",
            f"Settings: {reproduce.json.dumps(settings)}.",
            "",
            table(records),
            "",
            "![loss, z-std and kNN accuracy per epoch](simtriplet.png)",
            "",
        ]
    )
    reproduce.write_outputs(args.out, "simtriplet", payload, markdown)
    print(table(records))
    print(f"wrote {args.out}/simtriplet.md, simtriplet.json, simtriplet.png ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
