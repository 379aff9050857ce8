"""No import cycle between modules of `pdgen`, lazy imports included, read from the source with `ast`.

Every `import` and `from ... import` counts wherever it stands (module level, inside a function, under
`if TYPE_CHECKING:`), relative imports are resolved, and `from package import name` points at the submodule
when `name` is one, else at the package's `__init__`. Left out: the parent packages a dotted import executes
first (`import pdgen.a.b` runs `pdgen/a/__init__.py`, but a package re-exporting its submodules is not a
cycle with each of them), and imports by computed name (`importlib.import_module`, a config's class_path).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pdgen"

def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """(module, name) pairs a module imports: `import a.b` is ("a.b", None), `from a import b` ("a", "b")."""
    names: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.extend((source, None if alias.name == "*" else alias.name) for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: the pdgen modules it imports}."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        targets: set[str] = set()
        for source, name in imported_names(tree, module, path.name == "__init__.py"):
            target = f"{source}.{name}" if f"{source}.{name}" in files else source
            if target in files and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, modules in sorted order)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    lines = ["from . import b", "from .c import d", "def f():", "    import pdgen.x.e", "if TYPE_CHECKING:"]
    tree = ast.parse("\n".join([*lines, "    from pdgen import z"]))
    names = imported_names(tree, "pdgen.x.a", is_package=False)
    expected = [("pdgen", "z"), ("pdgen.x", "b"), ("pdgen.x.c", "d"), ("pdgen.x.e", None)]
    assert sorted(names, key=str) == expected
    assert imported_names(ast.parse("from . import a"), "pdgen.x", is_package=True) == [("pdgen.x", "a")]


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_pdgen():
    graph = import_graph()
    assert "pdgen.models.mask" in graph and graph["pdgen.models.mask"] == set(), "the mask rule is a leaf"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
