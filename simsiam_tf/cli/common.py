"""What every command-line tool shares: flag groups, flags.cfg, the main, errors and exit codes.

Every flag is defined from its config setting (`define_tool_flags`: name, default, help,
choices and --help group all come from `simsiam_tf.config`), and a tool's config is built
from its flags by field name (`config.flags.config_from_flag_values`), so the command
line, the Python API and `flags/demo.cfg` cannot drift apart.
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
from simsiam_tf.config import fields as config_fields
from simsiam_tf.config import flags as config_flags
from simsiam_tf.errors import RunError

FLAGS = flags.FLAGS

# Flags this package defined, in definition order: what flags.cfg records.
DEFINED = []
# The --help section of each of those flags, and the order of the sections.
FLAG_GROUPS = {}
# The config.flags.FlagSpec each of those flags was defined from.
FLAG_SPECS = {}
GROUP_ORDER = config_fields.GROUPS


def define_flag(spec):
    """Defines the absl flag of a `config.flags.FlagSpec` (once per process: tools share their definitions)."""
    FLAG_GROUPS[spec.name] = spec.group
    FLAG_SPECS[spec.name] = spec
    if spec.name not in DEFINED:
        DEFINED.append(spec.name)
    if spec.name in FLAGS:
        return
    if spec.kind == "enum":
        flags.DEFINE_enum(spec.name, spec.default, list(spec.choices), spec.help)
    else:
        getattr(flags, "DEFINE_" + spec.kind)(spec.name, spec.default, spec.help)


def define_tool_flags(config_cls, dry_run=True):
    """Defines a tool's flags from its config's settings (`config.flags.tool_flags`); with `dry_run`, --dry_run too."""
    specs = config_flags.tool_flags(config_cls)
    if dry_run:
        specs += config_flags.tool_flags(config_lib.ToolOptions)
    for spec in specs:
        define_flag(spec)
    return specs


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
    path = config_flags.find_run_flags(init_from)
    try:
        found = config_flags.read_flags_file(path) if path else {}
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


def inheriting(names, unless_given=()):
    """A `prepare` for `run_tool`: takes `names` from the flags.cfg of the --init_from run, each unless given.

    Says which as a comment line, so that --dry_run's output stays a flagfile. Nothing is
    taken without --init_from, nor when any flag of `unless_given` is given.
    """

    def prepare():
        if not FLAGS.init_from or any(FLAGS[name].present for name in unless_given):
            return
        taken = inherit_run_flags(FLAGS.init_from, names)
        if taken:
            print(
                f"# from the flags.cfg of {FLAGS.init_from}: " + " ".join(FLAGS[n].serialize() for n in taken),
                flush=True,
            )

    return prepare


def tool(config_cls, job, description, **run_tool_options):
    """A tool's flags, defined from `config_cls`, and its `(main, run_main)`: `run_tool` behind absl's `app.run`.

    `run_main()` is the console script; `run_tool_options` go to `run_tool` (dry_run,
    write_flags, ...). A config that names `INHERITED_FROM_RUN` takes those settings from
    the --init_from run's flags.cfg unless given (or unless any of its
    `INHERITED_UNLESS_GIVEN` flags is given).
    """
    define_tool_flags(config_cls)
    if hasattr(config_cls, "INHERITED_FROM_RUN"):
        run_tool_options.setdefault(
            "prepare",
            inheriting(config_cls.INHERITED_FROM_RUN, getattr(config_cls, "INHERITED_UNLESS_GIVEN", ())),
        )

    def main(argv):
        return run_tool(argv, config_cls, job, **run_tool_options)

    def entry():
        run_main(main, description)

    return main, entry


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
        lines += [f"  {_flag_line(FLAGS[name], FLAG_SPECS.get(name))}" for name in names]
    return "\n".join(lines)


def _flag_line(flag, spec=None):
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
    if spec is not None:
        limits = config_flags.range_text(spec.setting)
        summary += f". Range {limits}" if limits else ""
        summary += ". From the --init_from run unless given" if spec.inherited else ""
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
        config = config_flags.config_from_flag_values(config_cls, flag_values() if values is None else values)
        config.validate()
    except ValueError as err:
        fail(str(err), 2)
    return config


def run_tool(argv, config_cls, job, report=None, dry_run=None, write_flags=True, prepare=None, values=None):
    """The main of every tool: flags -> config -> validate -> dry run, or run (which writes flags.cfg) -> report -> exit code.

    `job` names the module of `simsiam_tf.runs` whose `run(config)` does the work (imported
    only then: checking the flags needs no TensorFlow); `report(config, result)`, by
    default that module's own `report`, prints its result. `prepare()` runs first (e.g.
    to fill flag defaults from another run); `values(flag_values)` maps a tool's own flag spellings to field values. `--dry_run`
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
        job_module = import_job(job)
        report = report or getattr(job_module, "report", None)
        run = job_module.run
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
