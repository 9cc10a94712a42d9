"""The README and docs/ say only what works: every command they show exists as shown.

Read from the pages' code (fenced blocks and `inline code`) and their links:

- ``make X VAR=...``: X is a Makefile target whose recipe uses each VAR;
- ``python -m pkg.mod --flag``: the module exists and defines each flag (a string
  constant in its source or in a module of the repository it imports);
- the console scripts of pyproject.toml (``detect --flag``): the same, for the function
  they run;
- a path of the repository (``ensemble/contract.py``) exists; a dotted name of one of
  its packages (``ensemble.server.stop_process``) is a module or a name defined in one,
  and so is every name a Python example imports from them;
- every relative link points at a file or folder that exists, and its ``#anchor`` at a
  heading of the page it names.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The repository's own packages: a name under them must exist here.
PACKAGES = ("ensemble", "client", "ui", "bench", "cluster")
# Folders whose paths a page may name; anything else (results/, .cache/) is made by a run.
TRACKED_FOLDERS = (*PACKAGES, "tests", "examples", "deploy", "scripts", "docs", "model_repository")

# A fenced block, indented as far as the list item it sits in.
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<language>[^\n]*)\n(?P<body>.*?)^(?P=indent)```",
    re.MULTILINE | re.DOTALL,
)
CODE_SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*$", re.MULTILINE)
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+([^#;&|]*)")
PYTHON_M = re.compile(r"(?:^|[\s/])python[\d.]*\s+-m\s+([\w.]+)([^#;&|]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")
PATH = re.compile(rf"^(?:{'|'.join(TRACKED_FOLDERS)})/[\w./-]*$")
DOTTED = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)+$")


@dataclass(frozen=True)
class Code:
    """One command line or code span of a page."""

    page: Path
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}: `{self.text}`"


def fenced_blocks(text: str, language: str | None = None) -> list[str]:
    """The fenced blocks' contents, dedented; only those of ``language`` if given."""
    return [
        textwrap.dedent(m["body"])
        for m in FENCE.finditer(text)
        if language is None or m["language"].strip() == language
    ]


def code_of(page: Path) -> Iterator[Code]:
    """Each line of a fenced block (continuation lines joined) and each inline span."""
    text = page.read_text()
    for block in fenced_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            yield Code(page, line.strip())
    for span in CODE_SPAN.findall(FENCE.sub("", text)):
        yield Code(page, " ".join(span.split()))


def all_code() -> list[Code]:
    return [code for page in PAGES for code in code_of(page)]


def page_ids() -> list[str]:
    return [str(p.relative_to(REPO)) for p in PAGES]


# The Makefile


@cache
def make_recipes() -> dict[str, str]:
    """Makefile target -> its recipe's text."""
    recipes: dict[str, str] = {}
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        rule = re.match(r"^([\w.-]+(?:\s+[\w.-]+)*)\s*:(?!=)", line)
        if rule and not line.startswith("\t"):
            targets = rule.group(1).split()
            current = [t for t in targets if not t.startswith(".")]
            for target in current:
                recipes[target] = ""
        elif line.startswith("\t") and current:
            for target in current:
                recipes[target] += line + "\n"
        elif line.strip() and not line.startswith("#"):
            current = None
    return recipes


@dataclass(frozen=True)
class MakeCall:
    target: str
    variables: tuple[str, ...]


def make_calls(code: Code) -> Iterator[MakeCall]:
    for match in MAKE.finditer(code.text):
        words = [w.strip("[]") for w in match.group(1).split()]
        words = [w for w in words if w and w != "..."]
        # Assignments before the target are make's too (make QUICK=1 bench).
        targets = [w for w in words if "=" not in w]
        if not targets or not re.fullmatch(r"[a-z][\w-]*", targets[0]):
            continue
        variables = tuple(w.split("=")[0] for w in words if "=" in w)
        yield MakeCall(targets[0], variables)


# Python modules and their flags


def module_file(name: str) -> Path | None:
    """The file ``python -m name`` runs, for a module of the repository."""
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def repository_module(name: str) -> Path | None:
    """The file of an importable module of the repository (a package's __init__.py)."""
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(path: Path) -> Iterator[Path]:
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(_parsed(path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = ".".join(p for p in (parent, base) if p)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            found = repository_module(name)
            if found:
                yield found


@cache
def flags_of(path: Path) -> frozenset[str]:
    """Every ``--flag`` string constant in a module and in the repository's modules it
    imports, at any depth: where an argument parser can have taken its options from."""
    seen, todo, flags = set(), [path], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(_parsed(current)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                flags.update(FLAG.findall(node.value))
        todo.extend(_imported_modules(current))
    return frozenset(flags)


@cache
def console_scripts() -> dict[str, Path]:
    """pyproject's console script -> the file of the module whose function it runs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    scripts = {}
    for name, entry in project.get("scripts", {}).items():
        module = entry.split(":")[0]
        scripts[name] = repository_module(module) or REPO / f"{module} (missing)"
    return scripts


@dataclass(frozen=True)
class Run:
    """``python -m module ...`` or a console script, with the flags shown."""

    program: str
    file: Path | None  # the repository's file it runs; None for another package's module
    flags: tuple[str, ...]


def runs(code: Code) -> Iterator[Run]:
    for match in PYTHON_M.finditer(code.text):
        module, rest = match.groups()
        in_repo = module.split(".")[0] in PACKAGES
        file = module_file(module) if in_repo else None
        if in_repo and file is None:
            file = REPO / f"{module} (missing)"
        yield Run(f"python -m {module}", file, tuple(FLAG.findall(rest)))
    for script, file in console_scripts().items():
        # At the start, after a space or as .venv/bin/detect (not the page's /detect API).
        shown = rf"(?:^|\s|bin/){re.escape(script)}(\s[^#;&|]*|$)"
        for match in re.finditer(shown, code.text):
            yield Run(script, file, tuple(FLAG.findall(match.group(1))))


# Names and links


@cache
def defined_names(path: Path) -> frozenset[str]:
    """The names a module binds at its top level (definitions, assignments, imports)."""
    names = set()
    for node in _parsed(path).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def dotted_name_exists(name: str) -> bool:
    """``pkg.mod[.attr]``: the longest module prefix exists and the next part, if any,
    is a submodule or a name it defines. ``client.x`` alone is also how the pages name
    a ``DetectorClient`` instance's method, so a bare package prefix proves nothing."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        path = repository_module(".".join(parts[:end]))
        if path is None:
            continue
        if end == len(parts):
            return True
        if end == 1:
            return parts[0] == "client" or parts[1] in defined_names(path)
        return parts[end] in defined_names(path)
    return False


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    return frozenset(slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text())))


# The tests


def test_the_pages_show_commands():
    """The checks below see what the pages hold (a broken reader would pass them all)."""
    shown = [run for code in all_code() for run in runs(code)]
    targets = {call.target for code in all_code() for call in make_calls(code)}
    assert targets >= {"demo", "test"}
    assert any(run.program == "python -m ensemble.server" and run.flags for run in shown)
    assert any(run.program == "detect" and run.flags for run in shown)


def test_every_make_target_shown_exists_and_takes_the_variables_shown():
    recipes = make_recipes()
    problems = []
    for code in all_code():
        for call in make_calls(code):
            if call.target not in recipes:
                problems.append(f"{code}: no target {call.target!r} in the Makefile")
                continue
            recipe = recipes[call.target]
            for variable in call.variables:
                if f"$({variable})" not in recipe and f"origin {variable}" not in recipe:
                    problems.append(f"{code}: `make {call.target}` does not use {variable}")
    assert not problems, "\n".join(problems)


def test_every_python_module_and_script_shown_exists_and_takes_the_flags_shown():
    problems = []
    for code in all_code():
        for run in runs(code):
            if run.file is None:  # another package's module: it must be installed
                module = run.program.removeprefix("python -m ")
                if importlib.util.find_spec(module) is None:
                    problems.append(f"{code}: no module {module}")
                continue
            if not run.file.is_file():
                problems.append(f"{code}: {run.program} does not exist")
                continue
            missing = [f for f in run.flags if f not in flags_of(run.file)]
            if missing:
                problems.append(f"{code}: {run.program} has no {', '.join(missing)}")
    assert not problems, "\n".join(problems)


def test_every_python_example_imports_what_exists():
    problems = []
    for page in PAGES:
        for block in fenced_blocks(page.read_text(), "python"):
            for node in ast.walk(ast.parse(block)):
                if not isinstance(node, ast.ImportFrom) or not node.module:
                    continue
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                module = repository_module(node.module)
                for alias in node.names:
                    submodule = repository_module(f"{node.module}.{alias.name}")
                    if module is None or not (alias.name in defined_names(module) or submodule):
                        where = page.relative_to(REPO)
                        problems.append(f"{where}: from {node.module} import {alias.name}")
    assert not problems, "\n".join(problems)


def test_every_repository_path_and_name_shown_exists():
    problems = []
    for code in all_code():
        for word in code.text.split():
            word = word.strip("()[],;:'\"").split("::")[0]
            if any(c in word for c in "<>{}*$"):
                continue  # a pattern, not a path
            missing_path = PATH.match(word) and not (REPO / word).exists()
            missing_name = DOTTED.match(word) and not dotted_name_exists(word)
            if missing_path or missing_name:
                problems.append(f"{code}: no {word}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_relative_link_points_at_something_that_exists(page):
    problems = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not problems, f"{page.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_readme_is_a_front_door():
    """At most 250 lines, and its commands table names every target of the Makefile."""
    readme = REPO / "README.md"
    lines = readme.read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move detail to docs/"
    shown = {call.target for code in code_of(readme) for call in make_calls(code)}
    missing = sorted(set(make_recipes()) - shown)
    assert not missing, f"make targets the README's commands table lacks: {missing}"
