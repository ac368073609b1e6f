"""The code's structure, checked on its source: no import cycles, no private names or attributes used
across modules, and the command line's start-up does not pay for the data stack or torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("madata", "madata_algos", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements executed when the module is imported (not inside functions or TYPE_CHECKING blocks)."""
    out = []

    def visit(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(node)
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)

    visit(tree.body)
    return out


def _targets(node: ast.stmt) -> list[str]:
    """The project modules an import statement loads."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in names if n in MODULES]


def test_no_import_cycles():
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        deps = set()
        for node in _top_level_imports(tree):
            deps.update(t for t in _targets(node) if t != name)
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                dfs(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            dfs(n)


def _defined(tree: ast.Module) -> set[str]:
    """Names a module defines: functions, classes, assigned names and attributes."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
    return out


def test_no_private_names_or_attributes_across_modules():
    """A private name or attribute of one of the project's modules is used only in that module.
    (Private attributes of third-party objects, such as MaMuJoCo's, are outside this check.)"""
    trees = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
    defined = {name: _defined(tree) for name, tree in trees.items()}
    project_private = {n for names in defined.values() for n in names if n.startswith("_") and not n.startswith("__")}
    problems = []
    for name, tree in trees.items():
        path, own = MODULES[name], defined[name]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in MODULES:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        problems.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}")
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                attr = node.attr
                if attr not in project_private or attr in own:
                    continue
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {ast.unparse(node)}")
    assert not problems, "\n".join(problems)


def _imported_by(code: str) -> set[str]:
    script = f"{code}\nimport sys\nprint('MODULES:', ' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.rpartition("MODULES:")[2].split())


def test_cli_start_up_imports_neither_the_data_stack_nor_torch():
    loaded = _imported_by("import cli.app")
    assert not {"torch", "zarr", "pyarrow", "numpy", "madata.dataset"} & loaded, sorted(
        loaded & {"torch", "zarr", "pyarrow", "numpy"}
    )


def test_help_and_info_do_not_import_torch(tmp_path):
    from conftest import random_episode, write

    from madata.schema import AgentSpec
    from madata.spaces import Box

    agents = [AgentSpec("a", Box.make(-1, 1, (2,)), Box.make(-1, 1, (1,)))]
    import numpy as np

    path = write(tmp_path / "ds", agents, [random_episode(agents, 3, np.random.default_rng(0))])
    for args in (["--help"], ["info", str(path)], ["train", "--help"], ["train", "cast-bcq", "--help"]):
        code = f"import sys\nfrom cli.errors import run\nfrom cli.app import app\nrun(app, {args!r})"
        assert "torch" not in _imported_by(code), args


def test_the_base_library_imports_no_optional_environment_stack():
    """madata, its collector, diagnostics (out of core too), export and task families load without pettingzoo,
    tensorstore, jax or jaxmarl, Dask or s3fs: each is an optional extra, imported where it is used."""
    loaded = _imported_by(
        "import madata, madata.collect, madata.ops, madata.diagnostics.core, madata.pettingzoo, madata.convert.og_marl,"
        " madata.diagnostics.streaming, madata.export, madata.distributed, madata.envs.smax, madata.envs.registry"
    )
    assert not {"pettingzoo", "mpe2", "tensorstore", "jax", "jaxmarl", "dask", "distributed", "s3fs"} & loaded
