"""Every flag of every tool comes from its config setting's one definition: help, default, choices, --help group."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import pytest

from simsiam_tf import config as config_lib
from simsiam_tf.config import fields

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = {
    "pretrain": config_lib.PretrainConfig,
    "linear": config_lib.LinearConfig,
    "verify": config_lib.VerifyConfig,
    "export": config_lib.ExportConfig,
    "data_worker": config_lib.DataWorkerConfig,
    "embed": config_lib.EmbedConfig,
}
# Dumps every absl flag the package defined (absl's own left out) as the tool's process sees them.
DUMP = """
import importlib, json, sys
from absl import flags
importlib.import_module("simsiam_tf.cli." + sys.argv[1])
out = {}
for module, defined in flags.FLAGS.flags_by_module_dict().items():
    if module.startswith("simsiam_tf"):
        for f in defined:
            out[f.name] = {"help": f.help, "default": f.default, "choices": getattr(f.parser, "enum_values", None)}
print(json.dumps(out))
"""


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@functools.lru_cache(maxsize=None)
def _flags_of(name):
    """{flag: {help, default, choices}} of the flags the tool `name` defined, read in its own process."""
    return json.loads(_run("-c", DUMP, name))


@pytest.fixture(scope="module", params=sorted(TOOLS))
def tool(request):
    name = request.param
    flags = _flags_of(name)
    help_out = _run("-m", f"simsiam_tf.cli.{name}", "--help")
    return name, TOOLS[name], flags, help_out


def _settings(config, group=None):
    """{field name: (Setting, default, --help group)} of a config (class or instance) and its sections."""
    out = {}
    defaults = config() if isinstance(config, type) else config
    for field in dataclasses.fields(defaults):
        value = getattr(defaults, field.name)
        if dataclasses.is_dataclass(value):
            section = field.metadata[fields.SECTION]
            inner = _settings(value, section.group)
            out.update({k: v for k, v in inner.items() if section.flags is None or k in section.flags})
        else:
            definition = field.metadata[fields.SETTING]
            out[field.name] = (definition, value, definition.group or group)
    return out


def _help_groups(help_out):
    """{flag name: heading} of a tool's --help."""
    heading, out = None, {}
    for line in help_out.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            heading = line[:-1]
        elif line.startswith("  --"):
            out[line.split()[0][2:].split("=")[0]] = heading
    return out


def test_every_flag_is_a_setting_of_the_tool_s_config_and_every_setting_a_flag(tool):
    name, config_cls, flags, _ = tool
    settings = _settings(config_cls)
    extra = {"dry_run"} if name != "data_worker" else set()
    assert set(flags) == set(settings) | extra


def test_every_flag_s_help_default_and_choices_are_its_setting_s(tool):
    name, config_cls, flags, _ = tool
    for flag, (definition, default, _) in _settings(config_cls).items():
        got = flags[flag]
        text = got["help"]
        if got["choices"] is not None:  # absl puts an enum's choices in front: "<a|b>: ..."
            prefix = "<" + "|".join(got["choices"]) + ">: "
            assert text.startswith(prefix), (flag, text)
            text = text[len(prefix) :]
        assert text.startswith(definition.help), (name, flag, text)
        if isinstance(default, tuple):
            assert tuple(float(v) for v in got["default"]) == default, flag
        elif default is None and definition.none_flag:
            assert got["default"] == definition.none_flag, flag
        else:
            assert got["default"] == default, flag
        if definition.choices is not None and not isinstance(definition.choices[0], int):
            expected = list(definition.choices) + ([definition.none_flag] if definition.none_flag else [])
            assert got["choices"] == expected, flag


def test_help_lists_every_flag_under_its_setting_s_group(tool):
    name, config_cls, flags, help_out = tool
    groups = _help_groups(help_out)
    for flag, (_, _, group) in _settings(config_cls).items():
        assert groups.get(flag) == group, (name, flag, groups.get(flag), group)
    assert set(groups) == set(flags)


def test_a_flag_two_tools_share_has_one_help_text():
    helps = {name: _flags_of(name) for name in ("pretrain", "linear", "verify")}
    shared = ("width_multiplier", "backbone", "sync_bn", "lr_schedule", "checkpoint_every_steps", "image_size")
    for flag in shared:
        texts = {
            helps[name][flag]["help"].split(" Taken from the flags.cfg")[0] for name in helps if flag in helps[name]
        }
        assert len(texts) == 1, (flag, texts)
    assert helps["linear"]["labels_per_class"]["help"] == helps["verify"]["labels_per_class"]["help"]
    # Taken from the --init_from run: the tool says so in the flag's help.
    assert "Taken from the flags.cfg of the --init_from run" in helps["linear"]["width_multiplier"]["help"]
    assert "Taken from the flags.cfg of the --init_from run" not in helps["pretrain"]["width_multiplier"]["help"]


def test_help_says_each_setting_s_range_and_where_its_default_comes_from(tool):
    name, _, _, help_out = tool
    lines = {line.split()[0].split("=")[0]: line for line in help_out.splitlines() if line.startswith("  --")}
    if name == "linear":
        assert lines["--image_size"].endswith("pixels. Range >= 8. From the --init_from run unless given")
        assert lines["--momentum"].endswith("momentum. Range [0, 1)")
    elif name == "data_worker":
        assert lines["--port"].endswith("for a worker. Range [0, 65535]")
    elif name == "pretrain":
        assert lines["--width_multiplier"].endswith("(1.0 = standard). Range > 0")
        assert "From the --init_from run" not in help_out
