"""simsiam-verify: pair verification (Siamese twin heads) on a SimSiam encoder.

Trains a contrastive, triplet or classifier head (or none: --head=cosine) on pairs
drawn from a labelled dataset, chooses the decision threshold on validation pairs and reports ROC-AUC, EER,
accuracy, TAR at FAR=1e-2 and 5-/20-way one-shot accuracy on evaluation pairs whose
classes were not trained on (unless --closed_set). Recipes:
--flagfile=flags/verify_synthetic.cfg, flags/omniglot_verify.cfg, flags/lfw_verify.cfg.

--backbone and --width_multiplier default to those in the flags.cfg of the --init_from
run, so a pretrained encoder is rebuilt as it was trained.

Exit codes: 0 done, 1 run failed (message says why), 2 invalid flags.
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from absl import flags  # noqa: E402

from simsiam_tf import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
_D = config_lib.VerifyConfig()


def define_flags():
    common.define_runtime_flags(_D.runtime)
    common.define_data_flags(_D.data)
    m = _D.model
    common.group("model")
    common.define(
        "string",
        "backbone",
        m.backbone,
        "resnet18, resnet34 or resnet50; suffix _cifar for the CIFAR stem. Default: the --init_from "
        f"run's (its flags.cfg), else {m.backbone}.",
    )
    common.define(
        "float",
        "width_multiplier",
        m.width_multiplier,
        f"Scales every ResNet width. Default: the --init_from run's, else {m.width_multiplier}.",
    )
    common.define(
        "enum",
        "sync_bn",
        m.sync_bn,
        list(config_lib.SYNC_BN),
        "Synchronized BatchNorm across replicas; auto = on with more than one replica.",
    )
    common.define(
        "string",
        "init_from",
        _D.init_from,
        "simsiam-pretrain run directory (or checkpoint) whose encoder starts the verifier; empty: random init.",
    )
    common.define(
        "bool",
        "freeze_encoder",
        _D.freeze_encoder,
        "Keep the encoder fixed (weights and BatchNorm statistics) and train only the head.",
    )
    common.group("evaluation")
    common.define(
        "bool",
        "compare_random_init",
        _D.compare_random_init,
        "Also train the same head on a random-init encoder (in model_dir/random_init) and report its figures.",
    )
    common.define(
        "bool",
        "compare_pixels",
        _D.compare_pixels,
        "Also score the evaluation pairs by the cosine similarity of their standardised raw pixels (no "
        "training) and report its figures as pixels_*; the output warns when the encoder does no better.",
    )
    common.group("model")
    common.define(
        "enum",
        "head",
        _D.head,
        list(config_lib.VERIFY_HEADS),
        "contrastive (loss on the euclidean distance), triplet (in-batch mining), classifier "
        "(MLP on [|e1-e2|, e1*e2], binary cross-entropy), or cosine (no head: the cosine of the encoder's "
        "features; with --freeze_encoder nothing is trained, the few-label choice for unseen classes).",
    )
    common.define("integer", "embedding_dim", _D.embedding_dim, "Width of the embedding the head compares.")
    common.define(
        "integer", "hidden_dim", _D.hidden_dim, "Hidden width of the embedding head and of the classifier MLP."
    )
    common.define("bool", "normalize_embeddings", _D.normalize_embeddings, "l2-normalise the embeddings.")
    common.define("float", "margin", _D.margin, "Margin of the contrastive and triplet losses.")
    common.define(
        "enum",
        "mining",
        _D.mining,
        list(config_lib.MININGS),
        "Triplet mining in the batch: semi_hard (FaceNet) or batch_hard (Hermans et al.).",
    )
    common.define(
        "enum",
        "distance",
        _D.distance,
        list(config_lib.DISTANCES),
        "Distance of the triplet head (the contrastive head uses l2).",
    )
    common.group("evaluation")  # pairs
    common.define(
        "bool",
        "closed_set",
        _D.closed_set,
        "Evaluate on classes seen in training (images held out per class) instead of unseen classes.",
    )
    common.define(
        "float",
        "eval_fraction",
        _D.eval_fraction,
        "Open set: share of the classes held out for evaluation (unless the splits already have "
        "disjoint classes); closed set on one split: share of each class's images held out.",
    )
    common.define(
        "float",
        "val_fraction",
        _D.val_fraction,
        "Share of each evaluation class's images used for the validation pairs that set the threshold.",
    )
    common.group("data")
    common.define(
        "enum",
        "augment",
        _D.augment,
        list(config_lib.VERIFY_AUGMENTS),
        "Training-pair augmentation: none, random resized crop, or crop and horizontal flip.",
    )
    common.define(
        "float",
        "crop_fraction",
        _D.crop_fraction,
        "Keep the central fraction of each image side before resizing (training and evaluation), "
        "for subjects that fill only the middle (LFW faces).",
    )
    common.group("evaluation")
    common.define("integer", "num_val_pairs", _D.num_val_pairs, "Validation pairs (half positive) for the threshold.")
    common.define("integer", "num_eval_pairs", _D.num_eval_pairs, "Evaluation pairs (half positive).")
    common.define("integer", "num_trials", _D.num_trials, "N-way one-shot trials for each of N = 5 and 20.")
    common.group("optimisation")
    common.define("integer", "batch_size", _D.batch_size, "Pairs per batch (triplets for the triplet head).")
    common.define("integer", "epochs", _D.epochs, "Training epochs.")
    common.define(
        "integer", "steps_per_epoch", _D.steps_per_epoch, "Steps per epoch (pairs are drawn afresh each step)."
    )
    common.define("float", "learning_rate", _D.learning_rate, "AdamW learning rate (cosine decay to 0).")
    common.define("float", "weight_decay", _D.weight_decay, "AdamW decoupled weight decay.")
    common.define_label_budget_flags(_D)
    common.group("evaluation")
    common.define("integer", "eval_batch_size", _D.eval_batch_size, "Batch size for embedding evaluation images.")
    common.group("run")
    common.define(
        "integer", "checkpoint_every_steps", _D.checkpoint_every_steps, "Checkpoint every N steps (and at the end)."
    )
    common.define("integer", "log_every_steps", _D.log_every_steps, "TensorBoard scalars every N steps.")
    common.define_dry_run_flag()


def _inherit_encoder_flags():
    """Takes --backbone/--width_multiplier and the run's hold-out from the --init_from run unless given."""
    common.inherit_run_flags(FLAGS.init_from, ("backbone", "width_multiplier", "holdout_fraction", "holdout_seed"))


def report(config, metrics):
    from simsiam_tf.runs import verify

    print(f"\nrun directory: {config.runtime.model_dir} ({metrics['head']} head, step {metrics['step']})")
    print(verify.summary_table(metrics))


def main(argv):
    return common.run_tool(argv, config_lib.VerifyConfig, "verify", report, prepare=_inherit_encoder_flags)


define_flags()


def run_main():
    common.run_main(main, __doc__)


if __name__ == "__main__":
    run_main()
