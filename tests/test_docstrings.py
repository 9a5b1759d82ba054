"""Every public name has a docstring, and its `Args:` section names only arguments it takes.

The public names are `simsiam_tf.__all__` and those of the modules the API reference
documents (docs/api/*.md): their `__all__`, or else the functions and classes they define
without a leading underscore. Constants (numbers, strings, tuples) carry no docstring of
their own and are left out. The oracle for the arguments is `inspect.signature`. The main
entry points (FULLY_DOCUMENTED) must also document every argument they take.
"""

import importlib
import inspect
import re

import pytest

import simsiam_tf

# The modules the API reference renders (mkdocs.yml's "API reference" pages).
PUBLIC_MODULES = (
    "simsiam_tf.models",
    "simsiam_tf.models.backbones",
    "simsiam_tf.models.heads",
    "simsiam_tf.models.simtriplet",
    "simsiam_tf.models.verifier",
    "simsiam_tf.losses",
    "simsiam_tf.optim",
    "simsiam_tf.augment",
    "simsiam_tf.data",
    "simsiam_tf.data.tiles",
    "simsiam_tf.config",
    "simsiam_tf.serving",
    "simsiam_tf.runs.export",
    "simsiam_tf.training.distribute",
    "simsiam_tf.evaluation.pair_metrics",
    "simsiam_tf.evaluation.neighbours",
    "simsiam_tf.errors",
)

SECTION = re.compile(r"^(\s*)(Args|Arguments|Returns|Yields|Raises|Example|Examples|Attributes|Note|Notes):\s*$")


def _public_names():
    names = {f"simsiam_tf.{name}": getattr(simsiam_tf, name) for name in simsiam_tf.__all__ if name != "__version__"}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            exported = [
                name
                for name, value in vars(module).items()
                if not name.startswith("_")
                and (inspect.isfunction(value) or inspect.isclass(value))
                and value.__module__ == module_name
            ]
        names.update({f"{module_name}.{name}": getattr(module, name) for name in exported})
    return [
        (label, value) for label, value in sorted(names.items()) if inspect.isfunction(value) or inspect.isclass(value)
    ]


PUBLIC = _public_names()


def documented_args(docstring):
    """The argument names an `Args:` section of a Google-style docstring lists."""
    lines = inspect.cleandoc(docstring).splitlines()
    names, indent, inside = [], None, False
    for line in lines:
        match = SECTION.match(line)
        if match:
            inside, indent = match.group(2) in ("Args", "Arguments"), None
            continue
        if not inside or not line.strip():
            continue
        own = len(line) - len(line.lstrip())
        if own == 0:
            inside = False
            continue
        if indent is None:
            indent = own
        if own == indent:
            entry = re.match(r"^\s*(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:", line)
            assert entry, f"cannot read the Args entry {line.strip()!r}"
            names.append(entry.group(1))
    return names


def test_documented_args_reads_google_style():
    doc = """Does a thing.

    Args:
        images: a batch,
            of images.
        size (int): pixels.
        **kwargs: passed on.

    Returns:
        value: not an argument.
    """
    assert documented_args(doc) == ["images", "size", "**kwargs"]


def test_the_public_surface_is_found():
    labels = {label for label, _ in PUBLIC}
    assert {"simsiam_tf.SimSiam", "simsiam_tf.losses.simsiam_loss", "simsiam_tf.data.make_pretrain_dataset"} <= labels
    assert len(labels) > 100


@pytest.mark.parametrize("label, value", PUBLIC, ids=[label for label, _ in PUBLIC])
def test_public_name_has_a_docstring(label, value):
    doc = inspect.getdoc(value) if inspect.isfunction(value) else value.__dict__.get("__doc__")
    assert doc and doc.strip(), f"{label} has no docstring"


@pytest.mark.parametrize("label, value", PUBLIC, ids=[label for label, _ in PUBLIC])
def test_documented_args_are_taken(label, value):
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
    if not doc:
        pytest.skip("no docstring (the test above fails)")
    documented = documented_args(doc)
    if not documented:
        return
    target = value
    if inspect.isclass(value) and "__init__" in value.__dict__:
        target = value.__init__
    parameters = inspect.signature(target).parameters
    taken = set()
    for name, parameter in parameters.items():
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        taken |= {name, prefix + name}
    unknown = [name for name in documented if name not in taken]
    assert not unknown, f"{label} documents {unknown}, which it does not take (it takes {list(parameters)})"


# The entry points users meet first document every argument (besides **kwargs passed on).
FULLY_DOCUMENTED = (
    "simsiam_tf.SimSiam",
    "simsiam_tf.PairVerifier",
    "simsiam_tf.LinearProbe",
    "simsiam_tf.build_backbone",
    "simsiam_tf.TwoViewAugment",
    "simsiam_tf.load_source",
    "simsiam_tf.make_pretrain_dataset",
    "simsiam_tf.CoupledSGD",
    "simsiam_tf.WarmupCosine",
    "simsiam_tf.scaled_lr",
    "simsiam_tf.simsiam_loss",
    "simsiam_tf.negative_cosine",
    "simsiam_tf.ServingModel",
    "simsiam_tf.export_saved_model",
    "simsiam_tf.export_run",
    "simsiam_tf.two_view_dataset",
)


@pytest.mark.parametrize("label", FULLY_DOCUMENTED)
def test_main_entry_points_document_every_argument(label):
    value = dict(PUBLIC)[label]
    doc = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
    target = value.__init__ if inspect.isclass(value) and "__init__" in value.__dict__ else value
    taken = [
        name
        for name, parameter in inspect.signature(target).parameters.items()
        if name != "self" and parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    missing = [name for name in taken if name not in documented_args(doc)]
    assert not missing, f"{label} does not document {missing}"
