"""The packages' layers (docs/development.md, "Layers"), read from the sources' imports:

* ``charging`` (the pure core) imports nothing of ours;
* ``balances`` and ``catalog_cache`` only ``charging`` — and ``catalog_cache`` the one Redis
  error boundary, ``balances.redis_errors``, so both stores translate redis-py's errors alike;
* ``service`` (the transport-neutral charging service) only those three;
* the flows, the CLI, the front doors, the API and billing anything below them;
* nothing of the product imports ``bench``, whose CLI is a plugin (entry point
  ``chargeflow.commands``);
* no two modules import each other, directly or round a cycle, counting imports inside
  functions too.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("charging", "balances", "catalog_cache", "service", "flows", "gateway", "api",
           "billing", "notifications")
OURS = (*PRODUCT, "bench")

#: package -> what of ours it may import (package names, or exact modules)
ALLOWED = {
    "charging": set(),
    "balances": {"charging"},
    "catalog_cache": {"charging", "balances.redis_errors"},
    "service": {"charging", "balances", "catalog_cache"},
}


@functools.cache
def modules(packages=OURS) -> dict[str, Path]:
    out = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else ():
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(path: Path, name: str) -> set[str]:
    """Our modules ``path`` imports, anywhere in it (``from x import y`` counts x.y when that
    is a module of ours, else x)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {m for m in found if m.split(".")[0] in OURS and m != name}


def _allowed(package: str, target: str) -> bool:
    rules = ALLOWED.get(package)
    if rules is None:
        return True
    return target.split(".")[0] == package or any(
        target == r or target.split(".")[0] == r for r in rules)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_layers_import_only_what_is_below_them(package):
    wrong = [f"{name} imports {target}"
             for name, path in modules((package,)).items()
             for target in sorted(imports(path, name)) if not _allowed(package, target)]
    assert wrong == []


def test_nothing_in_the_product_imports_bench():
    wrong = [f"{name} imports {target}" for name, path in modules(PRODUCT).items()
             for target in sorted(imports(path, name)) if target.split(".")[0] == "bench"]
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in modules().items():
        # a package's __init__ importing its own submodules is how packages are built, not a
        # cycle; a module importing its parent package is likewise
        graph[name] = {t for t in imports(path, name)
                       if not t.startswith(name + ".") and not name.startswith(t + ".")}
    return graph


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
