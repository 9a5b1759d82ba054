"""One definition per setting: `setting(...)` puts a field's help, choices and range in its metadata.

The absl flags (`config.flags.tool_flags`), the checks of `check_settings`, the
flags.cfg round trip and `--help` are all read from that metadata, so a setting is
described once, next to its default.
"""

import dataclasses
import math
import typing
from typing import Callable, Optional

SETTING = "simsiam_tf.setting"
SECTION = "simsiam_tf.section"
# The --help headings, in the order --help shows them.
GROUPS = ("data", "augmentation", "model", "optimisation", "evaluation", "run")


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a config field means, once: its help text, --help group, choices, range and role.

    `low`/`high` bound a number (closed unless `low_open`/`high_open`); `why` is said in
    parentheses after the range when a value is out of it; `what` is the message's words
    before the interval of a float ("be a probability in"; default "be a finite number in");
    `choices_text` says the choices in words for the message ("2 (CIFAR recipe) or 3").
    `check(value)` is a further rule on the value alone (e.g. a pair min,max in order);
    rules between fields stay in the config's `validate()`.
    `defines_variables`: a change of the setting changes the model's variables, so a run
    directory cannot resume with another value. `none_flag`: the flag's spelling of None
    (e.g. "auto"), for settings whose None means "decide for me".
    """

    help: str
    group: Optional[str] = None
    choices: Optional[tuple] = None
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""
    what: str = ""
    choices_text: str = ""
    check: Optional[Callable] = None
    defines_variables: bool = False
    none_flag: Optional[str] = None

    def __post_init__(self):
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(f"unknown setting group {self.group!r}; choose one of {', '.join(GROUPS)}")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    def field(self, default):
        """A dataclass field with this definition and `default` (settings shared by jobs differ only in it)."""
        return dataclasses.field(default=default, metadata={SETTING: self})


def setting(default, help, **definition):
    """A config field defined once: `epochs: int = setting(90, "Training epochs.", group="optimisation", low=1)`.

    Keyword arguments are those of `Setting`.
    """
    return Setting(help=help, **definition).field(default)


PROBABILITY = "be a probability in"


def probability(default, help, group=None):
    """A setting that is a probability in [0, 1]."""
    return setting(default, help, group=group, low=0, high=1, what=PROBABILITY)


@dataclasses.dataclass(frozen=True)
class Section:
    """A nested config (RuntimeConfig, ...): the --help group of its settings, and which of them are flags."""

    group: str
    flags: Optional[tuple] = None  # None: every setting of the section is a flag of the job


def section(default, group, flags=None):
    """A nested config field; `flags` limits the job's flags to these settings of the section."""
    return dataclasses.field(
        default=default, metadata={SECTION: Section(group, None if flags is None else tuple(flags))}
    )


def setting_of(field):
    """The `Setting` of a dataclass field, or None."""
    return field.metadata.get(SETTING)


def section_of(field):
    """The `Section` of a nested config field, or None."""
    return field.metadata.get(SECTION)


def base_type(kind):
    """int for Optional[int], the type itself otherwise."""
    if typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return kind


def check_settings(config):
    """Checks every setting of `config` (not of its sections) against its choices, range and rule.

    None passes (an optional setting left to its default). Raises ValueError naming the
    setting, the allowed values and the value given.
    """
    for field in dataclasses.fields(config):
        definition = setting_of(field)
        value = getattr(config, field.name)
        if definition is None or value is None:
            continue
        if definition.choices is not None and definition.choices_text and value not in definition.choices:
            raise ValueError(f"{field.name} must be {definition.choices_text}, got {value!r}")
        if definition.choices is not None:
            check_choice(field.name, value, definition.choices)
        if definition.low is not None or definition.high is not None:
            _check_range(field.name, value, base_type(field.type), definition)
        if definition.check is not None:
            definition.check(value)
    return config


def _check_range(name, value, kind, d):
    why = f" ({d.why})" if d.why else ""
    if kind is int and not isinstance(value, bool):
        below = d.low is not None and (value <= d.low if d.low_open else value < d.low)
        above = d.high is not None and (value >= d.high if d.high_open else value > d.high)
        if not (below or above):
            return
        if d.high is None and not d.low_open:
            bound = ">= 0" if d.low == 0 else f"at least {d.low}"
            raise ValueError(f"{name} must be {bound}{why}, got {value}")
        raise ValueError(f"{name} must be in {_interval(d.low, d.high, d.low_open, d.high_open)}{why}, got {value}")
    check_number(name, value, d.low, d.high, d.low_open, d.high_open, what=d.what or "be a finite number in", why=why)


def _interval(low, high, low_open, high_open):
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"


def check_number(
    name, value, low=None, high=None, low_open=False, high_open=False, what="be a finite number in", why=""
):
    """`value` when it is a finite number within the bounds, else a ValueError naming `name` and the range.

    The message reads "`name` must `what` `interval``why`, got `value`".
    """
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        interval = _interval(low, high, low_open, high_open)
        raise ValueError(f"{name} must {what} {interval}{why}, got {value}")
    return value


def check_choice(name, value, choices):
    """`value` when it is one of `choices`, else a ValueError naming them all."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def replace(config, **changes):
    """`dataclasses.replace` that also reaches into nested sections: replace(c, **{"data.image_size": 16})."""
    nested = {}
    flat = {}
    for key, value in changes.items():
        if "." in key:
            section_name, field = key.split(".", 1)
            nested.setdefault(section_name, {})[field] = value
        else:
            flat[key] = value
    for section_name, fields in nested.items():
        flat[section_name] = replace(getattr(config, section_name), **fields)
    return dataclasses.replace(config, **flat)
