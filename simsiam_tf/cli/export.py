"""simsiam-export: a finished run as a SavedModel with serving signatures and a .keras file.

--model_dir names a run directory of simsiam-pretrain, simsiam-linear or simsiam-verify;
its flags.cfg says which job it was and how to rebuild the model, and its latest
checkpoint gives the weights. Writes <output_dir>/saved_model and
<output_dir>/model.keras (output_dir defaults to <model_dir>/export). The signatures
are listed in the simsiam_tf.serving module's documentation; `saved_model_cli show
--all --dir <output_dir>/saved_model` prints them.

The run directory is only read: its flags.cfg stays the training run's.

Exit codes: 0 done, 1 export failed (message says why, e.g. no checkpoint), 2 invalid flags.
A SIGTERM lets the export finish; a half-written export is never visible.
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from simsiam_tf import config as config_lib  # noqa: E402


def dry_run(config):
    export_job = common.import_job("export")
    info = export_job.inspect_run(config.model_dir, config.kind)
    print(common.resolved_flags_text())
    print(
        f"would export the {info.kind} run {config.model_dir} from {info.checkpoint} "
        f"(images resized to {info.image_size}, centre crop {'on' if info.center_crop else 'off'}) "
        f"to {export_job.output_dir_of(config)}"
    )


main, run_main = common.tool(config_lib.ExportConfig, "export", __doc__, dry_run=dry_run, write_flags=False)

if __name__ == "__main__":
    run_main()
