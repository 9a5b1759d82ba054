"""Config dataclass <-> command-line flags <-> flags.cfg, all read from the settings' definitions.

Every flag of a tool is a setting of its config dataclass, nested sections flattened
(`--image_size` is `PretrainConfig.data.image_size`); a section may expose only some of
its settings (`section(..., flags=...)`). `tool_flags` describes each flag (kind, default,
help, choices, --help group) for the tools to define with absl; the tools turn parsed
flag values into a config with `config_from_flag_values`; the export job and the
benchmarks read a run's flags.cfg (or a recipe in flags/) with `read_flags_file` +
`config_from_flags`. No absl here: the tools pass the values of their flags in.
"""

import dataclasses
import os
import typing
from typing import Optional

from simsiam_tf.config import choices as c
from simsiam_tf.config.evaluation import LinearConfig, VerifyConfig
from simsiam_tf.config.fields import base_type, replace, section_of, setting_of
from simsiam_tf.config.pretraining import PretrainConfig
from simsiam_tf.errors import RunError

FLAGS_FILE = "flags.cfg"
INHERITED_NOTE = "Taken from the flags.cfg of the --init_from run unless given."


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One flag of a tool: what absl needs to define it, and the setting it fills."""

    name: str
    path: str  # the field it fills, dotted through sections: "model.width_multiplier"
    kind: str  # the absl DEFINE_ function: bool, integer, float, string, enum or list
    default: object
    help: str
    choices: Optional[tuple]  # enum values as absl takes them (strings)
    group: str
    setting: object
    type: object
    inherited: bool = False  # the tool takes it from the --init_from run's flags.cfg unless given


def _flag_table(config_cls, prefix="", group=None, only=None):
    """{flag name: (field path, type, Setting, group)} of a config dataclass and its nested sections."""
    out = {}
    for field in dataclasses.fields(config_cls):
        nested = section_of(field)
        if nested is not None:
            out.update(_flag_table(field.type, prefix + field.name + ".", nested.group, nested.flags))
            continue
        definition = setting_of(field)
        if definition is None or (only is not None and field.name not in only):
            continue
        heading = definition.group or group
        if heading is None:
            raise TypeError(f"setting {config_cls.__name__}.{field.name} needs a group (or a section that gives one)")
        if field.name in out:
            raise TypeError(f"{config_cls.__name__} has two settings named {field.name}: flags must be unique")
        out[field.name] = (prefix + field.name, field.type, definition, heading)
    return out


def flag_fields(config_cls):
    """{flag name: (field path, type)} of a config dataclass's flags, nested sections included."""
    return {name: entry[:2] for name, entry in _flag_table(config_cls).items()}


def tool_flags(config_cls):
    """The `FlagSpec` of every flag of `config_cls`, in the order of its fields."""
    inherited = getattr(config_cls, "INHERITED_FROM_RUN", ())
    defaults = config_cls()
    specs = []
    for name, (path, kind, definition, group) in _flag_table(config_cls).items():
        inner = base_type(kind)
        default = get(defaults, path)
        choices = None
        if typing.get_origin(inner) is tuple:
            flag_kind, default = "list", [str(v) for v in default]
        elif inner is bool:
            flag_kind = "bool"
        elif inner is int:
            flag_kind = "integer"
        elif inner is float:
            flag_kind = "float"
        elif definition.choices is not None:
            flag_kind, choices = "enum", definition.choices
            if definition.none_flag is not None:
                choices = choices + (definition.none_flag,)
        else:
            flag_kind = "string"
        if default is None and definition.none_flag is not None:
            default = definition.none_flag
        text = definition.help + (" " + INHERITED_NOTE if name in inherited else "")
        specs.append(
            FlagSpec(name, path, flag_kind, default, text, choices, group, definition, kind, name in inherited)
        )
    return specs


def range_text(definition):
    """A setting's range in a few characters for --help ("> 0", ">= 8", "[0, 1]"), or "" without one."""
    low, high = definition.low, definition.high
    if low is None and high is None:
        return ""
    if high is None:
        return f"{'>' if definition.low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if definition.high_open else '<='} {high:g}"
    return f"{'(' if definition.low_open else '['}{low:g}, {high:g}{')' if definition.high_open else ']'}"


def model_flags(config_cls):
    """The flags of `config_cls` whose settings define the model's variables: a restart cannot change them."""
    return tuple(name for name, entry in _flag_table(config_cls).items() if entry[2].defines_variables)


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


def _optional_of(kind):
    if typing.get_origin(kind) is typing.Union:
        return base_type(kind)
    return None


def _field_of(table, name):
    """(field path, type, Setting, negated) of a flag name, `--noX` for a boolean X included; None when unknown."""
    if name in table:
        return table[name][:3] + (False,)
    if name.startswith("no") and name[2:] in table:
        path, kind, definition, _ = table[name[2:]]
        if base_type(kind) is bool:
            return path, kind, definition, True
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
    table = _flag_table(config_cls)
    changes = {}
    for name, text in values.items():
        found = _field_of(table, name)
        if found is None:
            continue
        path, kind, definition, negated = found
        if negated:
            changes[path] = False
        elif definition.none_flag is not None and text == definition.none_flag:
            changes[path] = None
        else:
            changes[path] = _convert(name, text, kind)
    return replace(config_cls(), **changes)


CONFIGS = {"pretrain": PretrainConfig, "linear": LinearConfig, "verify": VerifyConfig}


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
        table = _flag_table(cls)
        unknown = sorted(n for n in names if _field_of(table, n) is None)
        known = {_field_of(table, n)[0] for n in names if n not in unknown}
        ranked.append((len(unknown), len(table) - len(known), c.EXPORT_KINDS.index(kind), kind, unknown))
    ranked.sort()
    unknown, _, _, kind, names_unknown = ranked[0]
    if unknown:
        raise RunError(
            f"cannot tell which tool wrote these flags: even simsiam-{kind} does not know "
            f"--{', --'.join(names_unknown)}"
        )
    return kind


def flags_text(config):
    """`config` as the text of a flags.cfg: a `# tool:` line, then one `--name=value` line per flag set.

    Settings at None are left out (their flags' default is None too); `config_from_flags`
    reads the text back into an equal config.
    """
    tools = {cls: kind for kind, cls in CONFIGS.items()}
    lines = [f"# tool: simsiam-{tools[type(config)]}"] if type(config) in tools else []
    for spec in tool_flags(type(config)):
        value = get(config, spec.path)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        lines.append(f"--{spec.name}={value}")
    return "\n".join(lines) + "\n"


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
    table = _flag_table(config_cls)
    changes = {}
    for name, value in values.items():
        if name in table:
            path, kind, definition, _ = table[name]
            none = definition.none_flag is not None and value == definition.none_flag
            changes[path] = None if none else _from_value(name, value, kind)
    return replace(config_cls(), **changes)


def get(config, path):
    """The value at a dotted field path: get(config, "model.backbone")."""
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value
