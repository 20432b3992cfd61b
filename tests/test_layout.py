"""The package's shape, checked from the source with ``ast`` (docs/api.md, "Layout"):

- data flows one way: core helpers, then ``io`` and ``weights``, then ``backbones`` (and the
  presets), then ``losses`` and ``metrics``, then ``extract`` and the tools, then the CLI; no module
  imports one of a higher level;
- no module over 500 lines;
- no import cycle between featx modules, counting imports inside functions (lazy imports) and
  under ``TYPE_CHECKING``;
- no module imports another module's private (``_underscore``) name, except from a private
  module (``featx/_checks.py``, ``featx/losses/_features.py``, ...), whose names are shared on purpose;
- the CLI imports only public featx names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def package_modules() -> dict[str, Path]:
    """``featx.x.y`` -> file, for every module of the library and the CLI (as ``featx_cli.*``)."""
    modules = {}
    for top, folder in (("featx", ROOT / "featx"), ("featx_cli", ROOT / "cli")):
        for path in sorted(folder.rglob("*.py")):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = package_modules()


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def imports_of(module: str) -> list[tuple[str, list[str], int]]:
    """Every import in the module, anywhere in its body: (imported module, names, line)."""
    return imports_in(MODULES[module].read_text(encoding="utf-8"), module, package=is_package(module))


def imports_in(source: str, module: str, *, package: bool) -> list[tuple[str, list[str], int]]:
    """The imports of ``source``, the text of ``module`` (a package's ``__init__`` if ``package``)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")
                base = base if package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return found


def internal_edges(module: str) -> set[str]:
    """featx modules this module imports (``from featx.a import b`` counts ``featx.a.b`` if a module)."""
    edges = set()
    for target, names, _ in imports_of(module):
        if target in MODULES:
            edges.add(target)
        for name in names:
            if f"{target}.{name}" in MODULES:
                edges.add(f"{target}.{name}")
    edges.discard(module)
    return edges


def test_the_walk_finds_the_package():
    # guards the checks below against passing on an empty module list
    assert {"featx", "featx.backbones.vgg.features", "featx.losses.functional", "featx_cli.main"} <= set(MODULES)


# Levels, lowest first: a module may import modules of its own level or below. The longest matching
# prefix decides a module's level.
LEVELS: dict[str, int] = {
    "featx._checks": 0,
    "featx._choices": 0,
    "featx._lazy": 0,
    "featx._version": 0,
    "featx.errors": 0,
    "featx.allocator": 0,
    "featx.io": 1,
    "featx.weights": 1,
    "featx.backbones": 2,
    "featx.presets": 2,
    "featx.losses": 3,
    "featx.metrics": 3,
    "featx.functional": 3,
    "featx.extract": 4,
    "featx.show": 4,
    "featx.integrations": 4,
    "featx": 5,
    "featx_cli": 6,
}


def level_of(module: str) -> int:
    prefixes = [prefix for prefix in LEVELS if module == prefix or module.startswith(prefix + ".")]
    if not prefixes:
        raise AssertionError(f"{module} has no level in LEVELS; add its folder")
    return LEVELS[max(prefixes, key=len)]


def test_every_module_has_a_level():
    for module in MODULES:
        level_of(module)


def test_data_flows_one_way():
    upward = []
    for module in MODULES:
        for target in internal_edges(module):
            if level_of(target) > level_of(module):
                upward.append(f"{module} (level {level_of(module)}) imports {target} (level {level_of(target)})")
    assert not upward, "imports against the flow:\n" + "\n".join(sorted(upward))


def test_the_level_check_sees_an_upward_import():
    # guards test_data_flows_one_way: a weights module importing a backbone is against the flow
    assert level_of("featx.weights.registry") < level_of("featx.backbones.vgg.layers")
    assert level_of("featx.extract.tiling") > level_of("featx.losses._features")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_500_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines (limit {MAX_LINES})"


def test_no_import_cycles():
    graph = {module: internal_edges(module) for module in MODULES}
    # a package's __init__ importing its own submodules is how a package exports; a submodule
    # importing its parent package back would be a cycle, and is caught below
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def is_private_module(module: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in module.split("."))


def test_no_private_names_cross_modules():
    offences = []
    for module in MODULES:
        for target, names, line in imports_of(module):
            if not target.startswith("featx") or is_private_module(target):
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):  # dunders such as __version__ are public
                    offences.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}.{name}")
    assert not offences, "\n".join(offences)


def test_the_walker_sees_lazy_and_relative_imports():
    # an import inside a function (a lazy import) and relative imports are resolved
    source = "def f():\n    from featx.weights import _secret\n    from .layers import _hidden\n    from . import io\n"
    found = imports_in(source, "featx.losses", package=False)
    assert found == [("featx.weights", ["_secret"], 2), ("featx.layers", ["_hidden"], 3), ("featx", ["io"], 4)]
    assert imports_in("from .engine import run\n", "featx.extract", package=True) == [("featx.extract.engine", ["run"], 1)]


def test_every_package_folder_is_installed():
    # pyproject.toml lists the packages explicitly (cli/ is installed as featx_cli); a new
    # subpackage missing there would be absent from a wheel while an editable install hides it
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {module for module in MODULES if is_package(module)}
    assert found == listed
