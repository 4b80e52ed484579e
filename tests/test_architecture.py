"""Boundary tests that keep ARCHITECTURE.md true: only runtime.py talks to onnxruntime, every op rule is
registered once, CLI commands stay thin, the package has no import cycle and no oversized file."""
from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "onnxplain"
MAX_LINES = 420        # "~400 lines unless it is one concept"
MAX_COMMAND_BODY = 25  # lines of a click command's body, docstring excluded


def _modules() -> dict:
    """{dotted module name: path} of every module of the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """Every module ``name`` imports (anywhere in the file, TYPE_CHECKING blocks and functions included)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                yield sub if sub in MODULES else mod


def test_only_runtime_imports_onnxruntime():
    offenders = sorted(name for name, path in MODULES.items()
                       if any(m == "onnxruntime" or m.startswith("onnxruntime.") for m in _imports(name, path))
                       and name != "onnxplain.runtime")
    assert offenders == []


def test_only_distributed_imports_ray():
    offenders = sorted(name for name, path in MODULES.items()
                       if any(m == "ray" or m.startswith("ray.") for m in _imports(name, path))
                       and not name.startswith("onnxplain.distributed"))
    assert offenders == []
    assert any(m == "ray" for m in _imports("onnxplain.distributed.cluster", MODULES["onnxplain.distributed.cluster"]))


def test_every_op_rule_is_registered_once():
    seen: dict = {}
    dupes = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "gradient_rule":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        if arg.value in seen:
                            dupes.append((arg.value, seen[arg.value], name))
                        seen[arg.value] = name
    assert len(seen) > 50, "the scan found the registrations"
    assert dupes == []


def test_no_import_cycles():
    graph = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}
    # a package imports its own submodules from __init__; a submodule importing its parent package back is
    # the cycle we forbid, so every edge counts
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert cycles == []


# ARCHITECTURE.md's table, top to bottom: a part imports parts of its own row or lower rows (never higher)
LAYERS = [
    ["__main__"],
    ["cli", "cli_options", "cli_patterns", "cli_evaluate"],
    ["onnxplain"],
    ["files", "files_parallel", "inspection", "gallery", "concepts", "text_files"],
    ["evaluation"],
    ["explainer", "stream", "runner", "text"],
    ["explainer_graph"],
    ["sampling"],
    ["lrp", "patterns", "perturbation", "cam"],
    ["methods"],
    ["canonical"],
    ["rules"],
    ["engine", "images", "heatmap", "inputs", "labels", "figures", "plotting"],
    ["graph", "runtime", "distributed", "fileio", "options", "progress", "quadrature"],
    ["errors"],
]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_imports_go_down_the_layers():
    rank = {part: i for i, row in enumerate(LAYERS) for part in row}
    assert {_part(m) for m in MODULES} <= set(rank), "every part of the package is in the table"
    upward = sorted((name, m) for name, path in MODULES.items() for m in _imports(name, path)
                    if m in MODULES and rank[_part(m)] < rank[_part(name)])
    assert upward == []


def test_no_oversized_files():
    big = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_cli_commands_are_thin():
    from onnxplain.cli import main

    fat = {}
    for name, cmd in main.commands.items():
        src = textwrap.dedent(inspect.getsource(cmd.callback))
        fn = ast.parse(src).body[0]
        body = fn.body[1:] if (fn.body and isinstance(fn.body[0], ast.Expr)
                               and isinstance(fn.body[0].value, ast.Constant)) else fn.body
        lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
        if lines > MAX_COMMAND_BODY:
            fat[name] = lines
    assert len(main.commands) >= 6
    assert fat == {}


@pytest.mark.parametrize("needle", ["import onnxruntime", "from onnxruntime"])
def test_the_boundary_scan_can_fail(tmp_path, needle):
    """The scanner sees an onnxruntime import where one is."""
    f = tmp_path / "m.py"
    f.write_text(f"def f():\n    {needle} import InferenceSession\n" if needle.startswith("from")
                 else f"{needle}\n")
    assert any(m.startswith("onnxruntime") for m in _imports("onnxplain.m", f))
