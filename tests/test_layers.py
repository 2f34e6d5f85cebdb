"""The package's shape: imports point one way (down the layers), no module imports itself back
through others, and no module outgrows what a reader can hold in their head.

Every ``import`` counts, including those inside functions: an import placed in a function to
dodge a cycle is still a cycle. Imports under ``if TYPE_CHECKING:`` never run, so they are left
out of the cycle check (they must still point down or sideways).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "pkdgan"
# Lowest first. A module may import from its own layer or any layer listed before it.
LAYERS = ["core", "models", "data", "evaluation", "training", "inference", "deploy", "reports", "pipeline",
          "api", "studies", "commands", "cli"]
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """Index of the layer ``pkdgan.<layer>...`` belongs to; None for the package root (version)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported pkdgan module, typing-only?, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    typing_only = _type_checking_nodes(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from pkdgan.core import runs`` imports the module pkdgan.core.runs
            targets = [f"{node.module}.{a.name}" if (SRC.parent / node.module.replace(".", "/")
                       / f"{a.name}.py").exists() else node.module for a in node.names]
        else:
            continue
        out += [(t, id(node) in typing_only, node.lineno) for t in targets if t.split(".")[0] == "pkdgan"]
    return out


def _graph() -> dict[str, list[tuple[str, bool, int]]]:
    return {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_subpackage_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert tops == set(LAYERS)


def test_imports_point_down():
    upward = []
    for module, imports in _graph().items():
        here = _layer(module)
        for target, _, line in imports:
            there = _layer(target)
            if here is not None and there is not None and there > here:
                upward.append(f"{module}:{line} imports {target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    edges = {m: sorted({t for t, typing_only, _ in imps if not typing_only and t != m and t in graph})
             for m, imps in graph.items()}
    # packages import nothing of their own in __init__, so a ``pkdgan.x`` edge is only the package
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_over_400_lines():
    big = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_no_private_name_is_imported_across_modules():
    """A leading underscore means "this module's own": another module importing it couples to an
    implementation detail (make it public, or move the code)."""
    crossing = []
    for p in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pkdgan"):
                crossing += [f"{_module_name(p)}:{node.lineno} imports {node.module}.{a.name}"
                             for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossing, "private names imported across modules:\n" + "\n".join(crossing)


def test_inference_stays_small_enough_to_read():
    """Detectors, estimators and scoring only: deployment lives in ``pkdgan.deploy`` (issue 32)."""
    lines = sum(len(p.read_text().splitlines()) for p in (SRC / "inference").rglob("*.py"))
    assert lines < 2000, f"inference holds {lines} lines"
