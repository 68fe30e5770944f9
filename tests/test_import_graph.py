"""The package's import graph: no circle, no import from a lower layer to a higher one, small modules.

Every `import` and `from … import` counts, deferred ones inside functions included: a deferred import
hides a circle from Python, not from a reader.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_stability"
# Lowest first. A module may import from its own layer or a lower one; "" is the package root.
LAYERS = (
    ("transforms",),
    ("nonfinite", "spikes"),
    ("inner_step", "optimizer_arguments", "optimizer"),
    ("step_log", "epoch_loop", "model", "callbacks", "sharpness", "rollback"),
    ("factories", "datasets"),
    ("config",),
    ("runs",),
    ("experiments",),
    ("report",),
    ("results", "demo", "cli", ""),
)
MAX_LINES = 350


def module_name(path: pathlib.Path) -> str:
    parts = ["keras_stability", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: pathlib.Path) -> set[str]:
    """The package's modules that `name` imports: `from m import x` imports m.x when m.x is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{name} belongs to no layer: add its top-level name to LAYERS in this test")


def test_every_module_has_a_layer():
    assert {name: layer(name) for name in MODULES}


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = sorted(
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(name)
    )
    assert upward == []


def test_no_import_circle():
    done, on_path, circles = set(), [], []

    def visit(name):
        on_path.append(name)
        for target in sorted(GRAPH[name]):
            if target in on_path:
                circles.append(" -> ".join(on_path[on_path.index(target) :] + [target]))
            elif target not in done:
                visit(target)
        on_path.pop()
        done.add(name)

    for name in sorted(GRAPH):
        if name not in done:
            visit(name)
    assert circles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by responsibility (at most {MAX_LINES})"


def test_the_graph_reads_relative_and_deferred_imports(tmp_path):
    # The checks above are only as good as this reading of the imports.
    assert "keras_stability.transforms.norms" in GRAPH["keras_stability.transforms.base"]
    assert (
        "keras_stability.inner_step" in GRAPH["keras_stability.optimizer"]
    )  # `from keras_stability import inner_step`
    assert "keras_stability.demo" in GRAPH["keras_stability.cli"]  # imported inside a function
