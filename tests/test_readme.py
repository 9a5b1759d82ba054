"""The README: short, the two commands first, every Python block run by a test, every shell command checked.

Shell commands are checked without a full run: each tool command runs as written with
`--dry_run` appended (the tool parses and validates its flags, reads the `--init_from`
run's flags.cfg, and prints the resolved flags without training), in a scratch folder
that holds the repository's `flags/` and a tiny `my_images` folder; a run's flags.cfg is
what the dry run of the command that makes that run printed. `pip install` lines are
checked against setup.cfg (the extra and the console scripts they name), and the test
command against `.ci/run`, which runs it.
"""

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
FIRST_COMMANDS = 'pip install -e . && simsiam-pretrain\npip install -e ".[test]" && python -m pytest -q tests\n'
RUNS_BLOCK = re.compile(r"<!-- [\w -]+: (tests/[\w/]+\.py) runs this block -->\n```python\n")


def readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def blocks(text, language):
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def shell_commands(text):
    """Each command of the README's bash blocks: continuation lines joined, comments and `&&` split off."""
    commands = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


def test_readme_is_short_and_opens_with_the_two_commands():
    text = readme()
    assert len(text.splitlines()) <= 200
    assert blocks(text, "bash")[0] == FIRST_COMMANDS
    assert text.index("```bash\n" + FIRST_COMMANDS) < text.index("\n## ")


def test_every_python_block_is_run_by_a_test():
    text = readme()
    marked = RUNS_BLOCK.findall(text)
    assert len(marked) == len(blocks(text, "python")), "a Python block of the README without a test that runs it"
    for path in marked:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            assert "README.md" in f.read(), f"{path} does not read the README"


def test_shell_commands_are_read():
    text = "```bash\nsimsiam-x --a=1 \\\n    --b=2   # note\n# comment\npip install -e . && simsiam-y\n```\n"
    assert shell_commands(text) == ["simsiam-x --a=1      --b=2", "pip install -e .", "simsiam-y"]


def _console_scripts():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return parser, {name.strip(): target.strip() for name, target in (line.split("=") for line in lines)}


def _my_images(folder):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(folder / label)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / label / f"{i}.png")


def test_every_shell_command_is_checked(tmp_path):
    parser, scripts = _console_scripts()
    extras = parser["options.extras_require"]
    os.symlink(os.path.join(ROOT, "flags"), tmp_path / "flags")
    _my_images(tmp_path / "my_images")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    commands = shell_commands(readme())
    assert commands, "no shell commands found"
    for command in commands:
        words = shlex.split(command)
        if words[:3] == ["pip", "install", "-e"]:
            extra = re.fullmatch(r"\.(?:\[(\w+)\])?", words[3])
            assert extra, command
            assert extra.group(1) is None or extra.group(1) in extras, f"{command}: no such extra"
        elif words == ["python", "-m", "pytest", "-q", "tests"]:
            with open(os.path.join(ROOT, ".ci", "run")) as f:
                assert "python -m pytest -q tests" in f.read()
        elif words[0] == "tensorboard":
            assert shutil.which("tensorboard") or shutil.which("tensorboard", path=os.path.dirname(sys.executable))
        elif words[0] in scripts:
            module = scripts[words[0]].split(":")[0]
            result = subprocess.run(
                [sys.executable, "-m", module, *words[1:], "--dry_run"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
            model_dir = re.search(r"^--model_dir=(.+)$", result.stdout, flags=re.M)
            if words[0] in ("simsiam-pretrain",) and model_dir:  # the run the next commands read
                os.makedirs(tmp_path / model_dir.group(1), exist_ok=True)
                (tmp_path / model_dir.group(1) / "flags.cfg").write_text(result.stdout)
        else:
            pytest.fail(f"the README's command {command!r} is not checked by this test")
