"""What every command-line tool shares: flag groups, flags.cfg, the main, errors and exit codes.

The flag defaults are read from the config dataclasses, and a tool's config is built
from its flags by field name (`flagfile.config_from_flag_values`), so the command line,
the Python API and `flags/demo.cfg` cannot drift apart.
"""
import importlib
import os
import sys

from absl import flags

from simsiam_tf import config as config_lib
from simsiam_tf import flagfile
from simsiam_tf.errors import RunError

FLAGS = flags.FLAGS

# Flags this package defined, in definition order: what flags.cfg records.
DEFINED = []


def define(kind, name, default, *args, **kwargs):
    if name in FLAGS:
        if name not in DEFINED:
            DEFINED.append(name)
        return
    getattr(flags, "DEFINE_" + kind)(name, default, *args, **kwargs)
    DEFINED.append(name)


def define_runtime_flags(defaults=config_lib.RuntimeConfig()):
    define("string", "model_dir", defaults.model_dir,
            "Run directory: flags.cfg, checkpoints/, logs/ (TensorBoard), metrics.json. A run whose "
            "directory holds a checkpoint resumes from it.")
    define("integer", "seed", defaults.seed, "Seed for weights, data order and augmentation.")
    define("enum", "strategy", defaults.strategy, list(config_lib.STRATEGIES),
            "tf.distribute strategy; auto = mirrored when more than one GPU is visible, else default.")
    define("string", "tpu", defaults.tpu, "TPU address or name for --strategy=tpu ('local' for a TPU VM).")
    define("enum", "precision", defaults.precision, list(config_lib.PRECISIONS),
            "Numeric precision of the model (mixed_bfloat16 for CPU/TPU, mixed_float16 for GPUs).")
    define("bool", "jit_compile", defaults.jit_compile, "Compile the train step with XLA.")
    define("integer", "verbose", defaults.verbose, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.")


def define_data_flags(defaults=config_lib.DataConfig()):
    define("string", "dataset", defaults.dataset,
            "'synthetic' (embedded, no download), a TFDS name (e.g. cifar10, imagenet2012), or 'folder'.")
    define("string", "data_dir", defaults.data_dir,
            "TFDS data directory, or for --dataset=folder the image folder (class sub-folders or flat).")
    define("integer", "image_size", defaults.image_size, "Side of the square training images in pixels.")
    define("string", "train_split", defaults.train_split, "Split used for training.")
    define("string", "eval_split", defaults.eval_split, "Split used for kNN/probe evaluation.")
    define("integer", "num_train_examples", defaults.num_train_examples,
            "Use only this many training images (synthetic: how many to generate).")
    define("integer", "num_eval_examples", defaults.num_eval_examples, "Use only this many evaluation images.")
    define("enum", "on_corrupt", defaults.on_corrupt, list(config_lib.ON_BAD_FILE),
            "What to do with image files that cannot be decoded: stop with an error naming them, or skip them.")


def define_model_flags(defaults=config_lib.ModelConfig()):
    define("string", "backbone", defaults.backbone,
            "resnet18, resnet34 or resnet50; suffix _cifar for the CIFAR stem (3x3 conv, no max-pool).")
    define("float", "width_multiplier", defaults.width_multiplier, "Scales every ResNet width (1.0 = standard).")
    define("integer", "dim", defaults.dim, "Projector output width (the paper: 2048).")
    define("integer", "pred_dim", defaults.pred_dim, "Predictor bottleneck width (the paper: 512).")
    define("integer", "projector_layers", defaults.projector_layers, "3 (ImageNet recipe) or 2 (CIFAR recipe).")
    define("bool", "stop_gradient", defaults.stop_gradient, "Stop-gradient on the target branch (off: the collapse ablation).")
    define("bool", "use_predictor", defaults.use_predictor, "Use the predictor MLP (off: Table 1a ablation).")
    define("bool", "heads_bn", defaults.heads_bn, "BatchNorm in the projector and predictor (off: Table 3 ablation).")
    define("enum", "sync_bn", defaults.sync_bn, list(config_lib.SYNC_BN),
            "Synchronized BatchNorm across replicas; auto = on with more than one replica.")


def define_dry_run_flag():
    define("bool", "dry_run", False, "Check the flags, print the resolved flags and exit without running.")


def resolved_flags_text():
    """The resolved flags as flagfile lines (the run's own --dry_run is left out)."""
    lines = ["# Resolved flags of this run; repeat it with --flagfile=<this file>."]
    for name in DEFINED:
        flag = FLAGS[name]
        if flag.value is None or name == "dry_run":
            continue
        if isinstance(flag.value, bool):
            lines.append(f"--{name}={'true' if flag.value else 'false'}")
        else:
            lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


def inherit_run_flags(init_from, names):
    """Sets each flag of `names` not given on the command line (or in a --flagfile) from the flags.cfg of the run at `init_from`.

    Returns the names taken over. A value the flag cannot parse ends the tool with exit code 2.
    """
    path = flagfile.find_run_flags(init_from)
    try:
        found = flagfile.read_flags_file(path) if path else {}
    except RunError as err:
        fail(str(err))
    taken = []
    for name in names:
        value = found.get(name)
        if value is None or FLAGS[name].present:
            continue
        try:
            FLAGS[name].parse(value)
        except (flags.IllegalFlagValueError, ValueError):
            fail(f"the flags.cfg of --init_from={init_from} has --{name}={value}, which is not valid here")
        taken.append(name)
    return taken


def fail(message, exit_code=2):
    """Ends the tool with a one-line message on stderr and a non-zero exit code."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def quiet_tensorflow():
    """Keeps TensorFlow's C++ start-up chatter off the console (before TF is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def flag_values():
    """{name: parsed value} of the flags this package defined."""
    return {name: FLAGS[name].value for name in DEFINED}


def config_from_flags(config_cls, values=None):
    """The tool's config from its flags (or from `values`), validated; invalid flags end the tool with exit code 2."""
    try:
        config = flagfile.config_from_flag_values(config_cls, flag_values() if values is None else values)
        config.validate()
    except ValueError as err:
        fail(str(err), 2)
    return config


def run_tool(argv, config_cls, job, report=None, dry_run=None, write_flags=True, prepare=None, values=None):
    """The main of every tool: flags -> config -> validate -> dry run, or run (which writes flags.cfg) -> report -> exit code.

    `job` names the module of `simsiam_tf.runs` whose `run(config)` does the work (imported
    only then: checking the flags needs no TensorFlow); `report(config, result)` prints
    its result. `prepare()` runs first (e.g. to fill flag defaults from another run);
    `values(flag_values)` maps a tool's own flag spellings to field values. `--dry_run`
    prints the resolved flags, or calls `dry_run(config)`. With `write_flags` the job gets
    the resolved flags as `run(config, flags_text=...)` and writes them as the run's
    flags.cfg once it holds the run directory's lock and its checks passed, so a run that
    fails to start leaves the flags.cfg of the run before it. A `RunError` ends the tool
    with its exit code, another bad input (ValueError) with 1, invalid flags with 2.
    """
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])}: every option is a --flag")
    if prepare is not None:
        prepare()
    config = config_from_flags(config_cls, None if values is None else values(flag_values()))
    try:
        if FLAGS.dry_run:
            if dry_run is None:
                print(resolved_flags_text())
            else:
                dry_run(config)
            return 0
        run = importlib.import_module(f"simsiam_tf.runs.{job}").run
        result = run(config, flags_text=resolved_flags_text()) if write_flags else run(config)
    except RunError as err:
        _quiet_tensorflow_at_exit()
        fail(str(err), err.exit_code)
    except ValueError as err:  # bad input found while loading data or building the model
        fail(str(err), 1)
    if report is not None:
        report(config, result)
    return 0


def _quiet_tensorflow_at_exit():
    # A failed restore leaves objects that log a page of "unrestored value" warnings
    # when they are garbage-collected at exit; the error line already says what failed.
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.get_logger().setLevel("ERROR")
