"""Config dataclass <-> absl flags <-> flags.cfg.

Every flag of a tool is a field of its config dataclass, nested sections flattened
(`--image_size` is `PretrainConfig.data.image_size`). The tools turn parsed flag values
into a config with `config_from_flag_values`; the export job and the benchmarks read a
run's flags.cfg (or a recipe in flags/) with `read_flags_file` + `config_from_flags`.
No absl here: the tools pass the values of their flags in.
"""

import dataclasses
import os
import typing

from simsiam_tf import config as config_lib
from simsiam_tf.errors import RunError

FLAGS_FILE = "flags.cfg"


def read_flags_file(path):
    """The `--name=value` lines of a flagfile as {name: value string}.

    A bare `--name` reads as "true"; `--noname` is kept as is and resolved against the
    config's boolean fields by `config_from_flags`. A `# tool: simsiam-NAME` comment
    line is kept as {"#tool": "simsiam-NAME"}.
    """
    values = {}
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                body = line[1:].strip()
                if body.startswith("tool:"):
                    values["#tool"] = body[len("tool:") :].strip()
                continue
            if not line.startswith("--"):
                raise RunError(f"{path}:{number}: expected --name=value, got {line!r}")
            name, sep, value = line[2:].partition("=")
            values[name] = value if sep else "true"
    return values


def flag_fields(config_cls, prefix=""):
    """{flag name: (field path, type)} of a config dataclass and its nested sections."""
    out = {}
    for field in dataclasses.fields(config_cls):
        if dataclasses.is_dataclass(field.type):
            out.update(flag_fields(field.type, prefix + field.name + "."))
        else:
            out[field.name] = (prefix + field.name, field.type)
    return out


def _optional_of(kind):
    if typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return None


def _field_of(fields, name):
    """(field path, type, negated) of a flag name, `--noX` for a boolean X included; None when unknown."""
    if name in fields:
        return fields[name] + (False,)
    if name.startswith("no") and name[2:] in fields:
        path, kind = fields[name[2:]]
        if (_optional_of(kind) or kind) is bool:
            return path, kind, True
    return None


def _convert(name, text, kind):
    inner = _optional_of(kind)
    if inner is not None:
        return None if text in ("", "None") else _convert(name, text, inner)
    try:
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0] if typing.get_args(kind) else str
            return tuple(_convert(name, part.strip(), item) for part in text.split(",") if part.strip())
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if kind in (int, float):
            return kind(text)
    except ValueError:
        raise RunError(f"flag --{name}={text} is not a valid {getattr(kind, '__name__', kind)}") from None
    return text


def config_from_flags(config_cls, values):
    """A config dataclass from flagfile values (`read_flags_file`); flags it has no field for are ignored."""
    fields = flag_fields(config_cls)
    changes = {}
    for name, text in values.items():
        found = _field_of(fields, name)
        if found is None:
            continue
        path, kind, negated = found
        changes[path] = False if negated else _convert(name, text, kind)
    return config_lib.replace(config_cls(), **changes)


CONFIGS = {"pretrain": config_lib.PretrainConfig, "linear": config_lib.LinearConfig, "verify": config_lib.VerifyConfig}


def detect_kind(values):
    """Which job wrote a flagfile: its `# tool:` line, else the job whose config knows all its flags.

    Every tool's flags are its config's fields, so the right job knows every flag; among
    several, the one with the fewest fields left unset wins.
    """
    tool = values.get("#tool", "")
    if tool.startswith("simsiam-") and tool[len("simsiam-") :] in CONFIGS:
        return tool[len("simsiam-") :]
    names = [n for n in values if not n.startswith("#")]
    ranked = []
    for kind, cls in CONFIGS.items():
        fields = flag_fields(cls)
        unknown = sorted(n for n in names if _field_of(fields, n) is None)
        known = {_field_of(fields, n)[0] for n in names if n not in unknown}
        ranked.append((len(unknown), len(fields) - len(known), config_lib.EXPORT_KINDS.index(kind), kind, unknown))
    ranked.sort()
    unknown, _, _, kind, names_unknown = ranked[0]
    if unknown:
        raise RunError(
            f"cannot tell which tool wrote these flags: even simsiam-{kind} does not know "
            f"--{', --'.join(names_unknown)}"
        )
    return kind


def find_run_flags(path):
    """The flags.cfg of the run at `path` (its directory, checkpoints/ folder or a checkpoint prefix in it), or None."""
    if not path:
        return None
    path = os.path.abspath(path)
    for directory in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        flags_path = os.path.join(directory, FLAGS_FILE)
        if os.path.isfile(flags_path):
            return flags_path
    return None


def _from_value(name, value, kind):
    """A parsed absl flag value as the field's type: lists as tuples of the item type, "" as None where optional."""
    inner = _optional_of(kind)
    if inner is not None:
        return None if value in ("", None) else _from_value(name, value, inner)
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        items = typing.get_args(kind)
        try:
            parsed = tuple(items[0](v) for v in value)
        except ValueError:
            raise ValueError(
                f"--{name} must be {len(items)} comma-separated numbers, got {','.join(map(str, value))}"
            ) from None
        if Ellipsis not in items and len(parsed) != len(items):
            raise ValueError(f"--{name} must be {len(items)} comma-separated numbers, got {len(parsed)}")
        return parsed
    return value


def config_from_flag_values(config_cls, values):
    """A config dataclass from parsed flag values {flag name: value}; fields without a flag keep their default.

    Raises ValueError naming the flag when a list flag has the wrong length or items.
    """
    fields = flag_fields(config_cls)
    changes = {}
    for name, value in values.items():
        if name in fields:
            path, kind = fields[name]
            changes[path] = _from_value(name, value, kind)
    return config_lib.replace(config_cls(), **changes)


def flags_text(config):
    """A config dataclass as flagfile lines (`--name=value`, one per field; None left out): what
    `read_flags_file` + `config_from_flags` turn back into the same config."""
    lines = []
    for name, (path, _) in flag_fields(type(config)).items():
        value = config
        for part in path.split("."):
            value = getattr(value, part)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"
