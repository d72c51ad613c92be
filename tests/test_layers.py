"""The packages' layers (docs/development.md, "Layers"), read from the sources' imports:

* ``charging`` (the pure core) imports nothing of ours;
* ``balances`` and ``catalog_cache`` only ``charging`` — and ``catalog_cache`` the one Redis
  error boundary, ``balances.redis_errors``, so both stores translate redis-py's errors alike;
* ``service`` (the transport-neutral charging service) only those three;
* the flows, the CLI, the front doors, the API and billing anything below them;
* nothing of the product imports ``bench``, whose CLI is a plugin (entry point
  ``chargeflow.commands``);
* the compiled-module machinery (the top-level ``chargeflow_native``) belongs to no layer:
  the four lower layers never import it, no package's ``__init__`` does, and every program
  that reaches a compiled module imports it before anything else of ours (so that
  ``CHARGEFLOW_PURE=1`` takes effect);
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
MACHINERY = "chargeflow_native"

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
    if packages == OURS:
        out[MACHINERY] = ROOT / f"{MACHINERY}.py"
    return out


def imports(path: Path, name: str) -> set[str]:
    """Our modules ``path`` imports, anywhere in it (``from x import y`` counts x.y when that
    is a module of ours, else x)."""
    return _imports_of(ast.parse(path.read_text(), str(path)), path, name)


def _imports_of(tree: ast.AST, path: Path, name: str) -> set[str]:
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
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
    return {m for m in found if m.split(".")[0] in (*OURS, MACHINERY) and m != name}


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


def test_no_package_init_imports_the_compiled_module_machinery():
    wrong = [name for name, path in modules().items()
             if path.name == "__init__.py" and MACHINERY in imports(path, name)]
    assert wrong == []


def _first_of_ours(path: Path, name: str) -> str | None:
    """The first module of ours ``path`` imports at its top level."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found = _imports_of(node, path, name)
            if found:
                return sorted(found)[0]
    return None


def _programs() -> dict[str, Path]:
    """Modules run as programs: ``python -m`` targets, the locust file, and the test suite's
    first conftest and its spawned workers."""
    out = {name: path for name, path in modules().items()
           if path.name == "__main__.py" or 'if __name__ == "__main__"' in path.read_text()}
    out["bench.locustfile"] = ROOT / "bench" / "locustfile.py"
    out["tests.conftest"] = ROOT / "tests" / "conftest.py"
    out["tests.balances.workload"] = ROOT / "tests" / "balances" / "workload.py"
    return out


def _at_import(path: Path, name: str) -> set[str]:
    """Our modules importing ``path`` runs: its top-level imports, outside functions and
    ``if TYPE_CHECKING:`` blocks."""
    def statements(body):
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    yield from statements(node.body)
                yield from statements(node.orelse)
            elif isinstance(node, ast.Try | ast.With):
                for part in ("body", "orelse", "finalbody"):
                    yield from statements(getattr(node, part, []))
                for handler in getattr(node, "handlers", []):
                    yield from statements(handler.body)

    tree = ast.parse(path.read_text(), str(path))
    return set().union(*(_imports_of(node, path, name) for node in statements(tree.body)))


def _reaches(name: str, targets: set[str]) -> bool:
    """Whether importing ``name`` imports one of ``targets``."""
    graph, seen, todo = _import_graph(), set(), [name]
    while todo:
        v = todo.pop()
        if v in targets:
            return True
        if v not in seen:
            seen.add(v)
            todo.extend(graph.get(v, ()))
            parts = v.split(".")  # importing a.b.c runs a and a.b first
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return False


@functools.cache
def _import_graph() -> dict[str, set[str]]:
    return {name: _at_import(path, name) for name, path in (modules() | _programs()).items()}


def test_every_program_reaching_a_compiled_module_imports_the_machinery_first():
    import chargeflow_native

    compiled = {chargeflow_native.module_name(m) for m in chargeflow_native.MODULES}
    checked, wrong = [], []
    for name, path in sorted(_programs().items()):
        package = name.rpartition(".")[0]
        # ``python -m a.b`` runs the package ``a`` first: it must not reach one already
        if package and _reaches(package, compiled):
            wrong.append(f"{package}, which python -m {name} imports first, reaches a "
                         "compiled module")
        if _reaches(name, compiled):
            checked.append(name)
            first = _first_of_ours(path, name)
            if first != MACHINERY:
                wrong.append(f"{name} imports {first} first")
    assert wrong == []
    assert {"flows.cli", "bench.e2e", "bench.locustfile", "tests.conftest"} <= set(checked)
