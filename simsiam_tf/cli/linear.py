"""simsiam-linear: linear evaluation of a pretrained encoder from the command line.

Loads the encoder of a simsiam-pretrain run (--init_from=<run directory or checkpoint>),
freezes it in inference mode, trains a linear classifier on --dataset's train split and
reports top-1/top-5 on its eval split. At the end it checks that every encoder variable,
BatchNorm moving statistics included, is bit-identical to what it loaded.
Recipes: --flagfile=flags/imagenet_resnet50_linear.cfg, flags/cifar10_resnet18_linear.cfg,
flags/demo_linear.cfg (the embedded demo's run).

What describes the data and the encoder (--dataset, --data_dir, --image_size, the splits
and example counts, --seed, --backbone, --width_multiplier) defaults to the flags.cfg of
the --init_from run, so `simsiam-linear --init_from=outputs/demo` alone probes the demo's
encoder on the demo's data; flags given on the command line or in a --flagfile win.
--optimizer, --batch_size, --augment and --standardize not given are chosen for the
training set: the reference's protocol (LARS, batch 4096, augmented crops, raw
features) for a large one; for a small one (where batch 4096 leaves fewer than 20 steps
per epoch) SGD on cached, standardised features and a batch halved until an epoch has
20 steps, since LARS's per-step moves of 0.001 x the weight norm add up over the
reference's 28,000 ImageNet steps but not over a small set's few thousand. The run
starts with a line naming the batch, lr and steps it uses. With --compare_baselines
the same probe also trains on the encoder at random init and on raw pixels, and the
output says in plain words when the trained encoder is not better.

Exit codes: 0 done, 1 run failed (message says why), 2 invalid flags, 4 the sanity
check found the frozen encoder changed.
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from absl import flags  # noqa: E402

from simsiam_tf import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
_D = config_lib.LinearConfig()


def define_flags():
    common.define_runtime_flags(_D.runtime)
    common.define_data_flags(_D.data)
    m = _D.model
    common.group("model")
    common.define(
        "string",
        "backbone",
        m.backbone,
        "Backbone of the pretraining run: resnet18, resnet34 or resnet50, suffix _cifar for the CIFAR stem.",
    )
    common.define(
        "float", "width_multiplier", m.width_multiplier, "Width multiplier of the pretraining run's backbone."
    )
    common.define(
        "enum",
        "sync_bn",
        m.sync_bn,
        list(config_lib.SYNC_BN),
        "Build the backbone with synchronized BatchNorm (no effect on a frozen encoder's numbers).",
    )
    common.define(
        "string",
        "init_from",
        _D.init_from,
        "Required: the simsiam-pretrain run directory (its latest checkpoint) or a checkpoint prefix. Its "
        "flags.cfg gives the defaults of the data and encoder flags.",
    )
    common.group("optimisation")
    common.define(
        "enum",
        "optimizer",
        _D.optimizer,
        list(config_lib.PROBE_OPTIMIZERS),
        "lars (trust 0.001) or sgd (coupled L2, PyTorch semantics). Default: lars, or sgd on a small "
        "training set (where batch 4096 leaves fewer than 20 steps per epoch).",
    )
    common.define(
        "integer",
        "batch_size",
        _D.batch_size,
        "Global batch size of the classifier's training. Default: 4096, halved (to a power of two >= 16) "
        "until an epoch has at least 20 steps; a batch given here is kept, with a warning when too large.",
    )
    common.define("integer", "epochs", _D.epochs, "Training epochs.")
    common.define(
        "float",
        "base_lr",
        _D.base_lr,
        "Base learning rate; the rate used is base_lr * batch_size / 256, cosine-decayed to 0.",
    )
    common.define_lr_schedule_flag(_D.lr_schedule)
    common.define("float", "momentum", _D.momentum, "Momentum.")
    common.define(
        "float", "weight_decay", _D.weight_decay, "Weight decay (LARS: on the weights only; sgd: coupled L2)."
    )
    common.define(
        "bool",
        "augment",
        _D.augment,
        "Random-resized-crop + flip training images (the paper); false: the evaluation preprocessing. "
        "Default: true, or false on a small training set.",
    )
    common.define(
        "bool",
        "standardize",
        _D.standardize,
        "Train the classifier on cached features scaled to zero mean and unit variance (train statistics, "
        "folded into the stored classifier). Default: false (the paper), or true on a small training set.",
    )
    common.define("list", "crop_scale", [str(v) for v in _D.crop_scale], "Random-resized-crop area range: min,max.")
    common.define(
        "float",
        "flip_prob",
        _D.flip_prob,
        "Probability of mirroring a training crop left-right (the paper: 0.5; 0 where mirror images are another "
        "class, e.g. digits and text). Taken from the --init_from run's flags.cfg unless given.",
    )
    common.define(
        "bool",
        "cache_features",
        _D.cache_features,
        "Extract the features once and train the classifier on them; default: true exactly when "
        "--augment=false. Needs --augment=false.",
    )
    common.group("evaluation")
    common.define(
        "bool",
        "compare_baselines",
        _D.compare_baselines,
        "Also train the same probe on the encoder at random init and on raw pixels (flattened, standardised "
        "images at --image_size), written as random_init_top1/top5 and pixels_top1/top5.",
    )
    common.define(
        "bool",
        "compare_random_init",
        _D.compare_random_init,
        "Also probe the same architecture at random init (implied by --compare_baselines).",
    )
    common.define_label_budget_flags(_D)
    common.define(
        "bool",
        "finetune",
        _D.finetune,
        "Fine-tune the whole encoder with the classifier (semi-supervised evaluation as SimCLR/BYOL, "
        "usually with a label budget): augmented crops, BatchNorm in training mode, SGD momentum "
        "--momentum without weight decay, one lr for all (SimCLR's base lr is 0.05). The check that "
        "the encoder is unchanged is skipped.",
    )
    common.define("integer", "eval_batch_size", _D.eval_batch_size, "Batch size of feature extraction and evaluation.")
    common.group("run")
    common.define(
        "integer", "checkpoint_every_steps", _D.checkpoint_every_steps, "Checkpoint every N steps (and at the end)."
    )
    common.define("integer", "log_every_steps", _D.log_every_steps, "TensorBoard scalars every N steps.")
    common.define_dry_run_flag()


def report(config, metrics):
    from simsiam_tf.runs import linear

    print(f"\nrun directory: {config.runtime.model_dir}")
    print(linear.summary(metrics))


# What describes the data and the encoder: taken from the pretraining run unless given.
RUN_FLAGS = (
    "dataset",
    "data_dir",
    "image_size",
    "train_split",
    "eval_split",
    "num_train_examples",
    "num_eval_examples",
    "on_corrupt",
    "holdout_fraction",
    "holdout_seed",
    "seed",
    "backbone",
    "width_multiplier",
    "flip_prob",
)


def inherit_run_flags():
    taken = common.inherit_run_flags(FLAGS.init_from, RUN_FLAGS)
    if taken:
        # A comment line, so that --dry_run's output stays a flagfile.
        print(
            f"# from the flags.cfg of {FLAGS.init_from}: " + " ".join(FLAGS[n].serialize() for n in taken), flush=True
        )


def main(argv):
    return common.run_tool(argv, config_lib.LinearConfig, "linear", report, prepare=inherit_run_flags)


define_flags()


def run_main():
    common.run_main(main, __doc__)


if __name__ == "__main__":
    run_main()
