"""The project modules a command imports, read from the source (every import statement, also those
inside functions, since a stage runs them), so `dvc.yaml` can be checked against them."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

PACKAGE = "pipeline"


def module_file(root: Path, name: str) -> Path | None:
    """`pipeline.a.b` -> pipeline/a/b.py or pipeline/a/b/__init__.py, if it is ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, file: Path) -> str:
    parts = file.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _statements_run_on_import(tree: ast.Module) -> list[ast.AST]:
    """Every node that runs when the module is imported: all but function bodies."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        found.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            pending.extend(ast.iter_child_nodes(node))
    return found


def imported_names(root: Path, file: Path, on_import_only: bool = False) -> set[str]:
    """Every module an import statement in `file` names: `from a import b` names `a`, and
    `a.b` too when that is a module. `on_import_only`: only those that run on import, not those
    inside functions."""
    package = _module_name(root, file)
    if file.name != "__init__.py":
        package = package.rpartition(".")[0]
    tree = ast.parse(file.read_text(), str(file))
    names = set()
    for node in _statements_run_on_import(tree) if on_import_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(root: Path, module: str, on_import_only: bool = False) -> set[Path]:
    """The files of every project module that running `module` loads (`on_import_only`: that
    importing it loads), parent packages' `__init__.py` included, relative to `root`."""
    return {file.relative_to(root) for file in _reached(root, module, on_import_only)[0]}


def third_party_on_import(root: Path, module: str) -> set[str]:
    """The top-level names of the other packages that importing `module` imports."""
    return _reached(root, module, on_import_only=True)[1]


def _reached(root: Path, module: str, on_import_only: bool) -> tuple[set[Path], set[str]]:
    seen: set[Path] = set()
    others: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name.split(".")[0] != PACKAGE:
            others.add(name.split(".")[0])
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b, then a.b.c
            file = module_file(root, ".".join(parts[:depth]))
            if file is None or file in seen:
                continue
            seen.add(file)
            pending.extend(imported_names(root, file, on_import_only))
    return seen, others


def command_module(cmd: str) -> str:
    """The module a stage command runs: `python -m pipeline.stages.train basic` -> ..."""
    argv = shlex.split(cmd)
    return argv[argv.index("-m") + 1]


def is_docstring_only(file: Path) -> bool:
    """A module whose whole body is its docstring: importing it cannot change anything."""
    body = ast.parse(file.read_text()).body
    return (
        len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    )


def expand(root: Path, dep: str) -> set[Path]:
    """A code dependency of `dvc.yaml` as the module files it covers."""
    path = root / dep
    if path.is_dir():
        return {file.relative_to(root) for file in path.rglob("*.py")}
    return {Path(dep)}
