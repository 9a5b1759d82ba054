"""simsiam-pretrain: SimSiam pretraining from the command line.

With no flags it runs the embedded demo (flags/demo.cfg written out): pretraining on
the synthetic set, kNN and linear-probe evaluation against the same encoder at random
init, and a short summary table. Recipes: --flagfile=flags/cifar10_resnet18.cfg,
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


def report(config, metrics):
    from simsiam_tf.runs import pretrain

    print(f"\nrun directory: {config.runtime.model_dir} (step {metrics['step']} of {metrics['total_steps']})")
    if "random_init_knn_top1" in metrics:  # evaluate=true; knn_every alone puts knn_top1 there too
        print(pretrain.summary_table(metrics))


main, run_main = common.tool(config_lib.PretrainConfig, "pretrain", report, __doc__)

if __name__ == "__main__":
    run_main()
