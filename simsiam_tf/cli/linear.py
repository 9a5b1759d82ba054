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
check found the frozen encoder changed, 5 preempted by SIGTERM (checkpoint saved: run
it again to resume).
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from simsiam_tf import config as config_lib  # noqa: E402

main, run_main = common.tool(config_lib.LinearConfig, "linear", __doc__)

if __name__ == "__main__":
    run_main()
