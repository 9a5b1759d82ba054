"""simsiam-pretrain: SimSiam pretraining from the command line.

With no flags it runs the embedded demo (flags/demo.cfg written out): pretraining on
the synthetic set, kNN and linear-probe evaluation against the same encoder at random
init, and a short summary table. Recipes: --flagfile=flags/cifar10_resnet18.cfg,
--flagfile=flags/imagenet_resnet50.cfg; the paper's ablations: flags/ablation_*.cfg;
SimTriplet on tiles: --method=simtriplet --dataset=synthetic_tiles (or --dataset=folder
with tile file names, see --tile_pattern).

Exit codes: 0 done, 1 run failed (message says why), 2 invalid flags, 3 the
representation collapsed and --on_collapse=stop ended the run.
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from absl import flags  # noqa: E402

from simsiam_tf import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
_D = config_lib.PretrainConfig()


def define_flags():
    common.define_runtime_flags(_D.runtime)
    common.define_data_flags(_D.data)
    common.define_model_flags(_D.model)
    a = _D.augment
    common.group("augmentation")
    common.define("list", "crop_scale", [str(v) for v in a.crop_scale], "Random-resized-crop area range: min,max.")
    common.define(
        "list",
        "jitter_strength",
        [str(v) for v in a.jitter_strength],
        "Colour jitter brightness,contrast,saturation,hue.",
    )
    common.define("float", "jitter_prob", a.jitter_prob, "Probability of colour jitter.")
    common.define("float", "grayscale_prob", a.grayscale_prob, "Probability of grayscale.")
    common.define("float", "blur_prob", a.blur_prob, "Probability of Gaussian blur (0 for the CIFAR recipe).")
    common.define("float", "flip_prob", a.flip_prob, "Probability of a horizontal flip.")
    common.define(
        "float", "affine_translate", a.affine_translate, "Random shift of each crop, up to this fraction of its size."
    )
    common.define("float", "affine_rotate_deg", a.affine_rotate_deg, "Random rotation of each crop, +-degrees.")
    common.define(
        "list", "affine_scale", [str(v) for v in a.affine_scale], "Random zoom of each crop: min,max (1,1: none)."
    )
    common.define("float", "affine_shear_deg", a.affine_shear_deg, "Random horizontal shear of each crop, +-degrees.")
    common.define(
        "enum",
        "augment_on",
        _D.augment_on,
        list(config_lib.AUGMENT_ON),
        "Where colour jitter, grayscale and blur run: host (in the tf.data pipeline), device (inside the "
        "compiled train step; the host only cuts uint8 crops), auto (device when a GPU or TPU is present).",
    )
    common.define(
        "string",
        "data_service",
        _D.data_service,
        "grpc://HOST:PORT of a tf.data service dispatcher: preprocessing runs on its workers "
        "(simsiam-data-worker). Unauthenticated: keep it on a private network.",
    )
    common.group("optimisation")
    common.define(
        "enum",
        "method",
        _D.method,
        list(config_lib.METHODS),
        "simsiam, or simtriplet (a third view from a neighbouring tile of the same group).",
    )
    common.define("integer", "batch_size", _D.batch_size, "Global batch size (split across replicas).")
    common.define("integer", "epochs", _D.epochs, "Training epochs (see --train_steps).")
    common.define(
        "integer",
        "train_steps",
        _D.train_steps,
        "Train the fewest whole epochs that give at least this many steps, whatever the size of the training "
        "set (replaces --epochs); the small-image recipe counts steps so that one file serves a few thousand "
        "and tens of thousands of images.",
    )
    common.define("float", "base_lr", _D.base_lr, "Base learning rate; the rate used is base_lr * batch_size / 256.")
    common.define("float", "weight_decay", _D.weight_decay, "Coupled L2 weight decay (PyTorch SGD semantics).")
    common.define("float", "momentum", _D.momentum, "SGD momentum.")
    common.define(
        "float",
        "warmup_epochs",
        _D.warmup_epochs,
        "Linear warmup before the cosine decay, in epochs (whole epochs with --lr_schedule=epoch).",
    )
    common.define_lr_schedule_flag(_D.lr_schedule)
    common.define("bool", "fix_pred_lr", _D.fix_pred_lr, "Keep the predictor at the initial learning rate.")
    common.define(
        "bool", "fixed_random_predictor", _D.fixed_random_predictor, "Never update the predictor (Table 1b ablation)."
    )
    common.group("run")
    common.define(
        "integer", "checkpoint_every_steps", _D.checkpoint_every_steps, "Checkpoint every N steps (and at the end)."
    )
    common.define("integer", "log_every_steps", _D.log_every_steps, "TensorBoard scalars every N steps.")
    common.group("evaluation")
    common.define("integer", "knn_every", _D.knn_every, "kNN accuracy every N epochs (0: off).")
    common.define("integer", "knn_k", _D.knn_k, "Neighbours for the kNN monitor.")
    common.define("float", "knn_temperature", _D.knn_temperature, "Temperature of the weighted kNN vote.")
    common.define(
        "enum",
        "on_collapse",
        _D.on_collapse,
        list(config_lib.COLLAPSE_ACTIONS),
        "When the normalised z-std stays under --collapse_threshold: stop (exit code 3), warn, or ignore.",
    )
    common.define(
        "float",
        "collapse_threshold",
        _D.collapse_threshold,
        "Normalised z-std under which a check counts as collapsed. Healthy runs stay near 1; a "
        "collapsed one cannot go below about 2/sqrt(per-replica batch), because the projector's "
        "last BatchNorm centres every channel over the batch.",
    )
    common.define(
        "integer", "collapse_patience", _D.collapse_patience, "Consecutive collapsed checks before the alarm."
    )
    common.group("model")
    common.define(
        "string",
        "init_from",
        _D.init_from,
        "Initialise weights (only) from this run directory or checkpoint when the run has no checkpoint.",
    )
    common.group("evaluation")
    common.define(
        "bool",
        "evaluate",
        _D.evaluate,
        "At the end: kNN and linear-probe accuracy of the encoder and of the same encoder at random init.",
    )
    common.define("integer", "probe_epochs", _D.probe_epochs, "Epochs of the quick cached-feature linear probe.")
    common.group("run")
    common.define("bool", "export", _D.export, "Export a SavedModel and a .keras file at the end.")
    common.group("data")  # simtriplet: tiles and their neighbours
    common.define(
        "string",
        "tile_pattern",
        _D.tile_pattern,
        "Regular expression for tile file names (--dataset=folder): named groups group (the whole "
        "image), col and row; e.g. slide7_x3_y12.png.",
    )
    common.define(
        "enum",
        "neighbourhood",
        _D.neighbourhood,
        list(config_lib.NEIGHBOURHOODS),
        "Neighbours for --method=simtriplet: 4 or 8 adjacent tiles, or group (any tile of the same image).",
    )
    common.define(
        "enum",
        "tile_on_mismatch",
        _D.tile_on_mismatch,
        list(config_lib.ON_BAD_FILE),
        "File names that do not match --tile_pattern: stop with an error, or use them without neighbours.",
    )
    common.define(
        "integer",
        "tiles_per_side",
        _D.tiles_per_side,
        "--dataset=synthetic_tiles: each whole synthetic image is a grid of N x N tiles.",
    )
    common.define_dry_run_flag()


def report(config, metrics):
    from simsiam_tf.runs import pretrain

    print(f"\nrun directory: {config.runtime.model_dir} (step {metrics['step']} of {metrics['total_steps']})")
    if "random_init_knn_top1" in metrics:  # evaluate=true; knn_every alone puts knn_top1 there too
        print(pretrain.summary_table(metrics))


def main(argv):
    return common.run_tool(argv, config_lib.PretrainConfig, "pretrain", report)


define_flags()


def run_main():
    common.run_main(main, __doc__)


if __name__ == "__main__":
    run_main()
