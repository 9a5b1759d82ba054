"""The package's layering, read from its import statements (`ast`, nothing imported).

cli -> runs -> builders -> library modules: a module imports only modules of its own
layer or of a layer below; no library module imports builders, runs/ or cli/; no
import cycles; only cli/ reads absl flags. Inside the library the subpackages are
layered too (LIBRARY_ORDER, lowest first): errors and config need nothing of the
package, the networks build on training and evaluation, serving on the networks. The checker is tried on a small package with
bad imports too, so that it is known to find what it looks for.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "simsiam_tf"
LAYERS = {"library": 0, "builders": 1, "runs": 2, "cli": 3}
# The library's groups (a subpackage or a top-level module), lowest first.
LIBRARY_ORDER = [
    "errors",
    "config",
    "progress",
    "losses",
    "optim",
    "augment",
    "data",
    "evaluation",
    "training",
    "models",
    "serving",
]
# Top-level modules that belong to a group while they wait for their subpackage.
GROUP_OF = {}


def modules_of(root, package):
    """{module name: path} of every .py file of the package below `root`."""
    found = {}
    base = os.path.join(root, package)
    for folder, _, files in os.walk(base):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(path, module, is_package, known):
    """The package modules that `path` imports anywhere in its body (functions included)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    here = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def import_graph(root, package):
    modules = modules_of(root, package)
    return {name: imports_of(path, name, path.endswith("__init__.py"), modules) for name, path in modules.items()}


def layer_of(module, package):
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package's facade: lazy re-exports, above every layer
    if parts[1] in ("cli", "runs", "builders"):
        return parts[1]
    return "library"


def library_group(module):
    """The library group of a module (None for the facade, builders, runs/ and cli/)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "runs", "builders"):
        return None
    return GROUP_OF.get(parts[1], parts[1])


def library_order_violations(graph, order):
    """Imports from a library group to a group above it in `order`; a group missing from `order` is an error too."""
    rank = {name: i for i, name in enumerate(order)}
    bad = []
    for module, targets in sorted(graph.items()):
        group = library_group(module)
        if group is None:
            continue
        if group not in rank:
            bad.append(f"{module}: its group {group!r} is not in LIBRARY_ORDER")
            continue
        for target in sorted(targets):
            target_group = library_group(target)
            if target_group in rank and rank[target_group] > rank[group]:
                bad.append(f"{module} ({group}) imports {target} ({target_group})")
    return bad


def layering_violations(graph, package):
    bad = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module, package)
        if layer is None:
            continue
        for target in sorted(targets):
            target_layer = layer_of(target, package)
            if target_layer is not None and LAYERS[target_layer] > LAYERS[layer]:
                bad.append(f"{module} ({layer}) imports {target} ({target_layer})")
    return bad


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), and modules importing themselves."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def absl_flag_readers(root, package):
    """Modules outside cli/ that import absl's flags."""
    readers = []
    for module, path in modules_of(root, package).items():
        if layer_of(module, package) == "cli":
            continue
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "absl"
                and any(a.name == "flags" for a in node.names)
            ):
                readers.append(module)
            elif isinstance(node, ast.Import) and any(a.name == "absl.flags" for a in node.names):
                readers.append(module)
    return readers


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, PACKAGE)


def test_the_parser_sees_the_package_s_imports(graph):
    # Edges the package is known to have: if the parser missed imports, these would go.
    assert "simsiam_tf.builders" in graph["simsiam_tf.runs.pretrain"]
    assert "simsiam_tf.builders" in graph["simsiam_tf.runs.export"]
    assert "simsiam_tf.config.flags" in graph["simsiam_tf.cli.common"]
    assert "simsiam_tf.data.source" in graph["simsiam_tf.data.pipeline"]
    assert "simsiam_tf.models" in graph["simsiam_tf.models.verifier"]
    # Imports inside functions count too (a tool imports what needs TensorFlow lazily).
    assert "simsiam_tf.data.service" in graph["simsiam_tf.cli.data_worker"]


def test_layers_import_only_downwards(graph):
    assert layering_violations(graph, PACKAGE) == []


def test_library_groups_import_only_their_own_or_lower_groups(graph):
    assert library_order_violations(graph, LIBRARY_ORDER) == []


def test_the_group_order_check_finds_an_upward_import():
    graph = {"simsiam_tf.models.simsiam": {"simsiam_tf.serving.model"}, "simsiam_tf.serving.model": set()}
    assert library_order_violations(graph, LIBRARY_ORDER) == [
        "simsiam_tf.models.simsiam (models) imports simsiam_tf.serving.model (serving)"
    ]
    assert library_order_violations({"simsiam_tf.extra.x": set()}, LIBRARY_ORDER) == [
        "simsiam_tf.extra.x: its group 'extra' is not in LIBRARY_ORDER"
    ]


def test_no_library_module_imports_builders_runs_or_cli(graph):
    for module, targets in graph.items():
        if layer_of(module, PACKAGE) == "library":
            assert not {t for t in targets if layer_of(t, PACKAGE) != "library"}, module


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_only_cli_reads_absl_flags():
    assert absl_flag_readers(ROOT, PACKAGE) == []


def test_config_and_errors_need_neither_tensorflow_nor_absl():
    config_dir = os.path.join(ROOT, PACKAGE, "config")
    paths = [os.path.join(config_dir, n) for n in sorted(os.listdir(config_dir)) if n.endswith(".py")]
    assert len(paths) > 3
    for path in paths + [os.path.join(ROOT, PACKAGE, "errors.py")]:
        with open(path) as f:
            tree = ast.parse(f.read())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"tensorflow", "keras", "absl", "numpy"}, (path, imported)


def test_config_is_the_bottom_layer(graph):
    """config/ imports only config/ and errors: every other layer may read settings, none is read by config."""
    for module, targets in graph.items():
        if module.startswith(f"{PACKAGE}.config"):
            outside = {t for t in targets if not t.startswith(f"{PACKAGE}.config") and t != f"{PACKAGE}.errors"}
            assert not outside, (module, outside)


def _write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_find_bad_imports_in_a_package_that_has_them(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/lib.py": "def f():\n    from pkg.runs import job\n    return job\n",
            "pkg/builders.py": "from pkg import lib\n",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "import pkg.c\n",
            "pkg/c.py": "from pkg.a import something\n",
            "pkg/runs/__init__.py": "",
            "pkg/runs/job.py": "from pkg import builders\nfrom pkg.cli import tool\n",
            "pkg/cli/__init__.py": "",
            "pkg/cli/tool.py": "from absl import flags\nfrom pkg.runs import job\n",
            "pkg/quiet.py": "from absl import flags\n",
        },
    )
    graph = import_graph(str(tmp_path), "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.builders"] == {"pkg.lib"}
    assert layering_violations(graph, "pkg") == [
        "pkg.lib (library) imports pkg.runs.job (runs)",
        "pkg.runs.job (runs) imports pkg.cli.tool (cli)",
    ]
    # lib -> runs.job -> builders -> lib, and runs.job <-> cli.tool, form one component.
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.builders", "pkg.cli.tool", "pkg.lib", "pkg.runs.job"]]
    assert absl_flag_readers(str(tmp_path), "pkg") == ["pkg.quiet"]
