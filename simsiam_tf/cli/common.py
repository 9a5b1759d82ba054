"""What every command-line tool shares: flag groups, flags.cfg, the main, errors and exit codes.

The flag defaults are read from the config dataclasses, and a tool's config is built
from its flags by field name (`flagfile.config_from_flag_values`), so the command line,
the Python API and `flags/demo.cfg` cannot drift apart.
"""

import contextlib
import importlib
import logging as py_logging
import os
import re
import sys
import tempfile

from absl import app, flags, logging

from simsiam_tf import config as config_lib
from simsiam_tf import flagfile
from simsiam_tf.errors import RunError

FLAGS = flags.FLAGS

# Flags this package defined, in definition order: what flags.cfg records.
DEFINED = []
# The --help section of each of those flags, and the order of the sections.
FLAG_GROUPS = {}
GROUP_ORDER = ("data", "augmentation", "model", "optimisation", "evaluation", "run")
_current_group = ["run"]


def group(name):
    """Puts the flags defined from now on under the --help heading `name` (one of GROUP_ORDER)."""
    if name not in GROUP_ORDER:
        raise ValueError(f"unknown flag group {name!r}; choose one of {', '.join(GROUP_ORDER)}")
    _current_group[0] = name


def define(kind, name, default, *args, **kwargs):
    FLAG_GROUPS[name] = _current_group[0]
    if name in FLAGS:
        if name not in DEFINED:
            DEFINED.append(name)
        return
    getattr(flags, "DEFINE_" + kind)(name, default, *args, **kwargs)
    DEFINED.append(name)


def define_runtime_flags(defaults=config_lib.RuntimeConfig()):
    group("run")
    define(
        "string",
        "model_dir",
        defaults.model_dir,
        "Run directory: flags.cfg, checkpoints/, logs/ (TensorBoard), metrics.json. A run whose "
        "directory holds a checkpoint resumes from it.",
    )
    define("integer", "seed", defaults.seed, "Seed for weights, data order and augmentation.")
    define(
        "enum",
        "strategy",
        defaults.strategy,
        list(config_lib.STRATEGIES),
        "tf.distribute strategy; auto = mirrored when more than one GPU is visible, else default.",
    )
    define("string", "tpu", defaults.tpu, "TPU address or name for --strategy=tpu ('local' for a TPU VM).")
    define(
        "enum",
        "precision",
        defaults.precision,
        list(config_lib.PRECISIONS),
        "Numeric precision of the model: float32, mixed_bfloat16 (TPUs, A100/H100 GPUs, CPUs with native "
        "bfloat16: avx512_bf16 or AMX; emulated and several times slower elsewhere, with a warning) or "
        "mixed_float16 (GPUs).",
    )
    define("bool", "jit_compile", defaults.jit_compile, "Compile the train step with XLA.")
    define(
        "integer", "verbose", defaults.verbose, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch."
    )


def define_data_flags(defaults=config_lib.DataConfig()):
    group("data")
    define(
        "string",
        "dataset",
        defaults.dataset,
        "'synthetic' (embedded, no download), a TFDS name (e.g. cifar10, imagenet2012), or 'folder'.",
    )
    define(
        "string",
        "data_dir",
        defaults.data_dir,
        "TFDS data directory, or for --dataset=folder the image folder (class sub-folders or flat).",
    )
    define("integer", "image_size", defaults.image_size, "Side of the square training images in pixels.")
    define("string", "train_split", defaults.train_split, "Split used for training.")
    define("string", "eval_split", defaults.eval_split, "Split used for kNN/probe evaluation.")
    define(
        "integer",
        "num_train_examples",
        defaults.num_train_examples,
        "Use only this many training images (synthetic: how many to generate).",
    )
    define("integer", "num_eval_examples", defaults.num_eval_examples, "Use only this many evaluation images.")
    define(
        "enum",
        "on_corrupt",
        defaults.on_corrupt,
        list(config_lib.ON_BAD_FILE),
        "What to do with image files that cannot be decoded: stop with an error naming them, or skip them.",
    )
    define(
        "float",
        "holdout_fraction",
        defaults.holdout_fraction,
        "A labelled folder without train/ and test/ sub-folders: the fraction of each class's images held out "
        "for evaluation (seeded, stratified; pretraining never sees them; 0 = none, evaluation on the training "
        "images).",
    )
    define(
        "integer",
        "holdout_seed",
        defaults.holdout_seed,
        "Seed of that hold-out (apart from --seed, so that runs with other seeds share one held-out split).",
    )


def define_model_flags(defaults=config_lib.ModelConfig()):
    group("model")
    define(
        "string",
        "backbone",
        defaults.backbone,
        "resnet18, resnet34 or resnet50; suffix _cifar for the CIFAR stem (3x3 conv, no max-pool).",
    )
    define("float", "width_multiplier", defaults.width_multiplier, "Scales every ResNet width (1.0 = standard).")
    define("integer", "dim", defaults.dim, "Projector output width (the paper: 2048).")
    define("integer", "pred_dim", defaults.pred_dim, "Predictor bottleneck width (the paper: 512).")
    define("integer", "projector_layers", defaults.projector_layers, "3 (ImageNet recipe) or 2 (CIFAR recipe).")
    define(
        "integer",
        "projector_hidden_dim",
        defaults.projector_hidden_dim,
        "Projector hidden width; 0 = the backbone's feature width, as the reference (2048 for ResNet-50).",
    )
    define(
        "enum",
        "projector_bn",
        defaults.projector_bn,
        list(config_lib.PROJECTOR_BN),
        "BatchNorm in the projector (paper Table 3): all (the reference, 3c), hidden (hidden layers only, 3b), "
        "none (3a).",
    )
    define(
        "enum",
        "predictor_bn",
        defaults.predictor_bn,
        list(config_lib.PREDICTOR_BN),
        "BatchNorm in the predictor: hidden (the reference), all (also on its output, Table 3d, unstable), none.",
    )
    define(
        "bool",
        "stop_gradient",
        defaults.stop_gradient,
        "Stop-gradient on the target branch (off: the collapse ablation).",
    )
    define("bool", "use_predictor", defaults.use_predictor, "Use the predictor MLP (off: Table 1a ablation).")
    define(
        "bool",
        "heads_bn",
        defaults.heads_bn,
        "BatchNorm in the projector and predictor; false = --projector_bn=none --predictor_bn=none (Table 3a).",
    )
    define(
        "enum",
        "sync_bn",
        defaults.sync_bn,
        list(config_lib.SYNC_BN),
        "Synchronized BatchNorm across replicas; auto = on with more than one replica.",
    )


LR_SCHEDULE_HELP = (
    "When the cosine learning rate changes: epoch (once at the start of each epoch, as the reference's "
    "adjust_learning_rate; the paper's recipes set it) or step (every step, a smooth curve; the default, with "
    "which the demo's figures were measured)."
)


def define_lr_schedule_flag(default):
    define("enum", "lr_schedule", default, list(config_lib.LR_SCHEDULES), LR_SCHEDULE_HELP)


def define_label_budget_flags(defaults):
    """--labels_per_class and --label_fraction, for the tools that train on labels (linear, verify)."""
    define(
        "integer",
        "labels_per_class",
        defaults.labels_per_class,
        "Label budget: train on this many labelled images of each class of the train split (drawn "
        "from --seed; recorded in metrics.json). Exclusive with --label_fraction.",
    )
    define(
        "float",
        "label_fraction",
        defaults.label_fraction,
        "Label budget: train on this fraction (0, 1] of each class's images (rounded, at least 1 per "
        "class; SimCLR/BYOL's 1% and 10% are 0.01 and 0.1). Exclusive with --labels_per_class.",
    )


def define_dry_run_flag():
    group("run")
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


HELP_ARGS = ("--help", "-help", "--helpshort", "-helpshort", "-h", "-?")


def run_main(main, description, argv=None):
    """The console-script entry of a tool: `--help` shows `description` and the tool's own flags by group,
    `--helpfull` absl's full listing; a flag absl cannot parse ends the tool with one line and exit code 2."""
    argv = list(sys.argv if argv is None else argv)
    options = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if any(arg in HELP_ARGS for arg in options):
        print(help_text(description))
        sys.exit(0)
    if any(arg in ("--helpfull", "-helpfull") for arg in options):  # absl's own --helpfull exits 1
        print(description.strip() + "\n\nEvery flag, absl's own included:\n\n" + FLAGS.get_help())
        sys.exit(0)
    logging.get_absl_logger().addFilter(_drop_checkpoint_chatter)
    app.run(main, argv=argv, flags_parser=_parse_flags)


def _drop_checkpoint_chatter(record):
    """absl logging filter: TensorFlow's per-save "Sharding callback duration" INFO line would break the progress bar."""
    return not (record.levelno <= py_logging.INFO and str(record.msg).startswith("Sharding callback duration"))


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        message = " ".join(str(err).replace("ERROR::", "").split())
        if isinstance(err, flags.UnrecognizedFlagError):
            message += " (--help lists the flags of this tool)"
        fail(message, 2)


def help_text(description):
    """The tool's description and its flags, one line each with its default, under their group headings."""
    lines = [description.strip(), "", "Flags (--helpfull lists every flag, absl's own included):"]
    for heading in GROUP_ORDER:
        names = [name for name in DEFINED if FLAG_GROUPS.get(name, "run") == heading]
        if not names:
            continue
        lines += ["", f"{heading}:"]
        lines += [f"  {_flag_line(FLAGS[name])}" for name in names]
    return "\n".join(lines)


def _flag_line(flag):
    value = flag.default
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif value is None:
        shown = ""
    elif isinstance(value, (list, tuple)):
        shown = ",".join(str(v) for v in value)
    else:
        shown = str(value)
    # The first sentence of the help (absl puts an enum's choices in front: "<a|b>: ...").
    summary = re.split(r"(?<!e\.g)(?<!i\.e)\.(?:\s|$)", flag.help.strip(), maxsplit=1)[0].rstrip(".")
    return f"--{flag.name}={shown}  {summary}" if shown else f"--{flag.name}  {summary}"


def quiet_tensorflow():
    """Keeps TensorFlow's C++ start-up chatter off the console (before TF is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# What TensorFlow prints on stderr while it loads and looks for devices, on a machine without
# a GPU or not: written before its C++ logging is initialised, TF_CPP_MIN_LOG_LEVEL does not hide it.
START_UP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)


@contextlib.contextmanager
def _without_start_up_noise():
    """Holds back everything written to stderr (file descriptor 2, so C++ too) and then writes
    it out without the lines of START_UP_NOISE. TF_CPP_MIN_LOG_LEVEL=0 keeps every line."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not any(noise in line for noise in START_UP_NOISE)
            ]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_job(job):
    """`simsiam_tf.runs.<job>`, importing TensorFlow and finding the devices without the start-up noise."""
    with _without_start_up_noise():
        module = importlib.import_module(f"simsiam_tf.runs.{job}")
        sys.modules["tensorflow"].config.list_physical_devices()
    return module


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
        run = import_job(job).run
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
