"""simsiam-verify: pair verification (Siamese twin heads) on a SimSiam encoder.

Trains a contrastive, triplet or classifier head (or none: --head=cosine) on pairs
drawn from a labelled dataset, chooses the decision threshold on validation pairs and reports ROC-AUC, EER,
accuracy, TAR at FAR=1e-2 and 5-/20-way one-shot accuracy on evaluation pairs whose
classes were not trained on (unless --closed_set). Recipes:
--flagfile=flags/verify_synthetic.cfg, flags/omniglot_verify.cfg, flags/lfw_verify.cfg.

--backbone and --width_multiplier default to those in the flags.cfg of the --init_from
run, so a pretrained encoder is rebuilt as it was trained.

Exit codes: 0 done, 1 run failed (message says why), 2 invalid flags, 5 preempted by
SIGTERM (checkpoint saved: run it again to resume).
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from simsiam_tf import config as config_lib  # noqa: E402

main, run_main = common.tool(config_lib.VerifyConfig, "verify", __doc__)

if __name__ == "__main__":
    run_main()
