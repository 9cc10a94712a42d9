"""The import rules of docs/architecture.md, read from the source.

Every ``.py`` file of the repository is parsed with ``ast`` (nothing is imported). An import
counts for the rules wherever it stands, a function body included; the cycles leave
out only those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import enum
import itertools
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.apt_tools import tool_or_skip

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]

# What ui/ and client/ may take from the server's package: the public contract.
CONTRACT = "ensemble.contract"
# `make demo` starts the server too: ui/__main__.py may use its launcher (with the
# launcher's stop signals, ensemble.processes) and models file.
DEMO_LAUNCHER = "ui.__main__"
DEMO_LAUNCHER_MAY_IMPORT = frozenset({"ensemble.server", "ensemble.processes", "ensemble.registry"})
# Modules of pure logic (numpy in, numpy out; files read, nothing served): they run in
# the unit tier and inside any process, so they import neither Triton's client nor the
# Python backend's utilities, directly or through what they import. ensemble.configgen
# is not among them: it writes the repository and takes its typed schema,
# ModelConfig, from tritonclient's protobuf module.
PURE_MODULES = (
    "ensemble.contract",
    "ensemble.imaging",
    "ensemble.boxes",
    "ensemble.registry",
    "ensemble.tracking",
)
PURE_PACKAGES = ("ensemble.families",)
TRITON_ONLY = ("tritonclient", "triton_python_backend_utils")


class Runs(enum.Enum):
    """When an import statement runs."""

    AT_IMPORT = "when its module is imported"  # module or class level
    IN_FUNCTION = "when a function calls it"
    NEVER = "never (if TYPE_CHECKING)"


@dataclass(frozen=True)
class Import:
    """One imported name, resolved: ``module`` is a module of the repository where the
    name is one (``from a import b`` with a module ``a.b`` resolves to ``a.b``), else
    the dotted name as written."""

    module: str
    line: int
    runs: Runs


@dataclass(frozen=True)
class Source:
    name: str  # dotted module name from the path: ui/__main__.py -> ui.__main__
    path: str  # relative to the repository root
    is_package: bool  # an __init__.py
    in_package: bool  # its folder has an __init__.py (else a script folder: tests/)


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources(root: Path, paths: Iterable[str]) -> dict[str, Source]:
    found = {}
    for path in paths:
        name = module_name(path)
        found[name] = Source(
            name=name,
            path=path,
            is_package=path.endswith("/__init__.py"),
            in_package=(root / path).parent.joinpath("__init__.py").exists(),
        )
    return found


def python_files(root: Path) -> list[str]:
    """The repository's .py files as the working tree has them: tracked ones still
    there, and new ones git does not ignore (a module being added is checked before
    its commit). Skips without git: the unit tier needs only the virtual environment."""
    listed = subprocess.run(
        [tool_or_skip("git"), "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted({p for p in listed.stdout.split() if (root / p).is_file()})


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _written_imports(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, Runs]]:
    """Every import statement with when it runs."""

    def walk(nodes: Iterable[ast.AST], runs: Runs):
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, runs
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, Runs.NEVER)
                yield from walk(node.orelse, runs)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                deferred = Runs.NEVER if runs is Runs.NEVER else Runs.IN_FUNCTION
                yield from walk(ast.iter_child_nodes(node), deferred)
            else:
                yield from walk(ast.iter_child_nodes(node), runs)

    yield from walk(tree.body, Runs.AT_IMPORT)


def _resolve(name: str, importer: Source, modules: Mapping[str, Source]) -> str:
    """A written absolute name as the importer's interpreter finds it: a script folder
    (tests/, examples/my-lab/) is first on sys.path, so its files import each other by
    bare name."""
    folder = importer.name.rpartition(".")[0]
    if not importer.in_package and folder:
        local = f"{folder}.{name}"
        if local in modules or f"{folder}.{name.partition('.')[0]}" in modules:
            return local
    return name


def imports_of(source: Source, root: Path, modules: Mapping[str, Source]) -> list[Import]:
    tree = ast.parse((root / source.path).read_text(), filename=source.path)
    found = []
    for node, runs in _written_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(_resolve(alias.name, source, modules), node.lineno, runs))
            continue
        if node.level:
            package = source.name if source.is_package else source.name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = ".".join(p for p in (package, node.module or "") if p)
        else:
            base = _resolve(node.module or "", source, modules)
        for alias in node.names:
            member = f"{base}.{alias.name}"
            module = member if member in modules else base
            found.append(Import(module, node.lineno, runs))
    return found


@dataclass(frozen=True)
class Tree:
    modules: dict[str, Source]
    imports: dict[str, list[Import]]

    @classmethod
    def read(cls, root: Path, paths: Iterable[str]) -> Tree:
        modules = sources(root, paths)
        return cls(modules, {name: imports_of(s, root, modules) for name, s in modules.items()})

    def graph(self, *runs: Runs) -> dict[str, set[str]]:
        """Repository module -> the repository modules it imports by statements that
        run as ``runs`` says."""
        return {
            name: {i.module for i in found if i.runs in runs and i.module in self.modules}
            for name, found in self.imports.items()
        }

    def loaded_with(self, name: str) -> set[str]:
        """Every repository module that importing ``name`` imports, ``name`` included."""
        graph, seen, todo = self.graph(Runs.AT_IMPORT), set(), [name]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(graph.get(current, ()))
        return seen


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(tree: Tree, importers: str, allowed) -> list[str]:
    """``path:line imports module`` for each import by a module of ``importers`` that
    ``allowed(importer, module)`` refuses."""
    return [
        f"{tree.modules[name].path}:{found.line} imports {found.module}"
        for name in sorted(tree.imports)
        if in_package(name, importers)
        for found in tree.imports[name]
        if not allowed(name, found.module)
    ]


@dataclass(frozen=True, order=True)
class Circle:
    modules: tuple[str, ...]  # every module of one strongly connected group, sorted
    cycle: tuple[str, ...]  # one cycle through some of them, the first repeated at the end


def cycles(graph: Mapping[str, set[str]]) -> list[Circle]:
    """The groups of modules that need each other (Tarjan's strongly connected
    components), each with one cycle through it in import order."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)

    found = []
    for group in groups:
        start = min(group)
        path, seen = [start], {start}
        while True:  # walk inside the group until a module repeats
            nxt = min(n for n in graph[path[-1]] if n in group)
            if nxt in seen:
                found.append(Circle(tuple(sorted(group)), tuple(path[path.index(nxt) :] + [nxt])))
                break
            path.append(nxt)
            seen.add(nxt)
    return sorted(found)


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree.read(REPO, python_files(REPO))


def fail_with(problems: list[str], rule: str) -> None:
    if problems:
        pytest.fail(f"{rule}:\n  " + "\n  ".join(problems), pytrace=False)


def test_ui_and_client_take_only_the_contract_from_ensemble(tree):
    def allowed(importer: str, module: str) -> bool:
        if not in_package(module, "ensemble"):
            return True
        if importer == DEMO_LAUNCHER and module in DEMO_LAUNCHER_MAY_IMPORT:
            return True
        return module == CONTRACT

    problems = violations(tree, "ui", allowed) + violations(tree, "client", allowed)
    # The contract itself stands alone, so that importing it brings no server code along.
    problems += violations(tree, CONTRACT, lambda _, module: module not in tree.modules)
    fail_with(problems, f"ui/ and client/ import nothing of ensemble/ but {CONTRACT}")


def test_client_imports_neither_ui_nor_bench(tree):
    problems = violations(
        tree, "client", lambda _, m: not (in_package(m, "ui") or in_package(m, "bench"))
    )
    fail_with(problems, "client/ imports neither ui/ nor bench/")


def test_ensemble_imports_no_package_above_it(tree):
    above = ("client", "ui", "bench", "cluster")
    problems = violations(tree, "ensemble", lambda _, m: not any(in_package(m, p) for p in above))
    fail_with(problems, "ensemble/ imports none of client/, ui/, bench/, cluster/")


def triton_imports(tree: Tree, name: str) -> list[str]:
    """Where ``name`` imports Triton's client or backend utilities: its own imports
    anywhere, and those that run with it when it is imported."""
    direct = [(name, found) for found in tree.imports[name]]
    loaded = [
        (module, found)
        for module in sorted(tree.loaded_with(name) - {name})
        for found in tree.imports[module]
        if found.runs is Runs.AT_IMPORT
    ]
    return [
        f"{tree.modules[importer].path}:{found.line} imports {found.module}"
        for importer, found in direct + loaded
        if any(in_package(found.module, t) for t in TRITON_ONLY)
    ]


def test_pure_modules_import_neither_tritonclient_nor_the_python_backend(tree):
    pure = [m for m in PURE_MODULES if m in tree.modules]
    assert pure == list(PURE_MODULES), "a pure module is gone: update PURE_MODULES and the docs"
    pure += [m for p in PURE_PACKAGES for m in tree.modules if in_package(m, p)]
    problems = [
        f"{tree.modules[name].path}: {where}"
        for name in pure
        for where in triton_imports(tree, name)
    ]
    fail_with(problems, f"pure modules import none of {', '.join(TRITON_ONLY)}")


def test_no_import_cycles(tree):
    # An import moved into a function does not end a circle, it hides it: the two
    # modules still need each other. Only `if TYPE_CHECKING:` imports, which never
    # run, are left out.
    graph = tree.graph(Runs.AT_IMPORT, Runs.IN_FUNCTION)

    def step(importer: str, module: str) -> str:
        lines = [i for i in tree.imports[importer] if i.module == module]
        where = "" if any(i.runs is Runs.AT_IMPORT for i in lines) else " (in a function)"
        return f"{module}{where}"

    found = []
    for circle in cycles(graph):
        steps = [step(a, b) for a, b in itertools.pairwise(circle.cycle)]
        line = " -> ".join([circle.cycle[0], *steps])
        if len(circle.modules) > len(circle.cycle) - 1:
            line += f" (the circle takes in {', '.join(circle.modules)})"
        found.append(line)
    fail_with(found, "import cycles between the repository's modules")


# The reader itself, on a tree made for it: a rule that sees nothing proves nothing.


def write_tree(root: Path, files: Mapping[str, str]) -> Tree:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return Tree.read(root, files)


def test_the_reader_finds_imports_in_functions_and_relative_ones(tmp_path):
    tree = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\ndef f():\n    from pkg.b import thing\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
            "scripts/run.py": "import helper\n",
            "scripts/helper.py": "",
        },
    )
    assert tree.imports["pkg.a"] == [
        Import("pkg.b", 1, Runs.AT_IMPORT),
        Import("pkg.b", 3, Runs.IN_FUNCTION),
    ]
    assert tree.imports["pkg.b"][-1] == Import("pkg.a", 3, Runs.NEVER)
    assert tree.imports["scripts.run"] == [Import("scripts.helper", 1, Runs.AT_IMPORT)]
    assert cycles(tree.graph(Runs.AT_IMPORT, Runs.IN_FUNCTION)) == []


def test_the_reader_follows_what_loads_with_a_module(tmp_path):
    tree = write_tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/pure.py": "from pkg import helper\n",
            "pkg/helper.py": (
                "import tritonclient.grpc\ndef f():\n    import triton_python_backend_utils\n"
            ),
        },
    )
    # helper's own function-level import does not run when pure is imported.
    assert triton_imports(tree, "pkg.pure") == ["pkg/helper.py:1 imports tritonclient.grpc"]


def test_the_reader_reports_a_cycle_and_a_forbidden_import(tmp_path):
    tree = write_tree(
        tmp_path,
        {
            "client/__init__.py": "from client.api import x\n",
            "client/api.py": "import client.video\n",
            "client/video.py": "def f():\n    from client import api\n    import ensemble.server\n",
        },
    )
    assert cycles(tree.graph(Runs.AT_IMPORT, Runs.IN_FUNCTION)) == [
        Circle(("client.api", "client.video"), ("client.api", "client.video", "client.api"))
    ]
    assert cycles(tree.graph(Runs.AT_IMPORT)) == []  # hidden in a function
    assert violations(tree, "client", lambda _, m: not in_package(m, "ensemble")) == [
        "client/video.py:3 imports ensemble.server"
    ]
