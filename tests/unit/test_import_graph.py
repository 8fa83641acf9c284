"""The import graph of the source tree: no cycles, no upward import, no world generator in production.

Layers, lowest first: ``ovseg`` < ``pipelines`` < ``jobs`` / ``bench``. Function-level imports
count (a lazy import is still a dependency). ``pipelines.world`` may be imported only from
``pipelines/world/``, ``bench/`` and ``tests/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"ovseg": 0, "pipelines": 1, "jobs": 2, "bench": 2}


def _modules(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every layer's .py files under ``root``."""
    out = {}
    for top in LAYERS:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(name: str, path: Path) -> set[str]:
    """Every dotted name ``path`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the tree it imports}``."""
    modules = _modules(root)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imp in _imported(name, path):
            while imp and imp not in modules:
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                targets.add(imp)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Upward imports and imports of the world generator from production code."""
    out = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]:
                out.append(f"upward import: {a} -> {b}")
            if b.startswith("pipelines.world") and not a.startswith(("pipelines.world", "bench")):
                out.append(f"production code imports the world generator: {a} -> {b}")
    return out


def test_the_tree_has_no_cycle_and_no_upward_import():
    graph = import_graph(ROOT)
    assert len(graph) > 100 and "pipelines.pairs.quality" in graph["pipelines.mine.report"]
    assert cycles(graph) == []
    assert layer_breaks(graph) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_checks_fail_on_a_cycle_an_upward_import_and_a_world_import(tmp_path):
    root = _tree(tmp_path, {
        "ovseg/__init__.py": "", "ovseg/a.py": "def f():\n    from pipelines.mine import b\n",
        "pipelines/__init__.py": "", "pipelines/mine/__init__.py": "",
        "pipelines/mine/b.py": "from . import c\n", "pipelines/mine/c.py": "from pipelines.mine.b import x\n",
        "pipelines/pairs/__init__.py": "", "pipelines/pairs/q.py": "from pipelines.world.categories import N\n",
        "pipelines/world/__init__.py": "", "pipelines/world/categories.py": "N = 1\n",
        "bench/__init__.py": "", "bench/s.py": "import pipelines.world.categories\n",
        "jobs/__init__.py": "", "jobs/j.py": "from ..pipelines.mine import b\n"})
    graph = import_graph(root)
    assert cycles(graph) == [["pipelines.mine.b", "pipelines.mine.c"]]
    assert "pipelines.mine" in graph["jobs.j"]  # a relative import resolves (and goes down: no break)
    assert set(layer_breaks(graph)) == {
        "upward import: ovseg.a -> pipelines.mine", "upward import: ovseg.a -> pipelines.mine.b",
        "production code imports the world generator: pipelines.pairs.q -> pipelines.world.categories"}
