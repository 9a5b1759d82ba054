"""simsiam-pretrain: SimSiam pretraining from the command line.

With no flags it runs the embedded demo (flags/demo.cfg written out): pretraining on
the synthetic scenes, kNN and linear-probe evaluation against the same encoder at random
init and raw pixels, an export, and a short summary table. Recipes: --flagfile=flags/cifar10_resnet18.cfg,
--flagfile=flags/imagenet_resnet50.cfg; the paper's ablations: flags/ablation_*.cfg;
SimTriplet on tiles: --method=simtriplet --dataset=synthetic_tiles (or --dataset=folder
with tile file names, see --tile_pattern).

Exit codes: 0 done, 1 run failed (message says why), 2 invalid flags, 3 the
representation collapsed and --on_collapse=stop ended the run, 5 preempted: a SIGTERM
stopped it after a step whose checkpoint it saved (run it again to resume).
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from simsiam_tf import config as config_lib  # noqa: E402

main, run_main = common.tool(config_lib.PretrainConfig, "pretrain", __doc__)

if __name__ == "__main__":
    run_main()
