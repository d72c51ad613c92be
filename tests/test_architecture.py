"""The rating core (``charging/``) is pure: no Redis, Kafka or Bytewax anywhere in it.

Services are reached only from the layers above (balances, flows); keeping them out of
``charging`` keeps rating testable and usable offline (``chargeflow rate``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import charging

FORBIDDEN = ("redis", "confluent_kafka", "bytewax")
CHARGING = Path(charging.__file__).resolve().parent
SOURCES = sorted(CHARGING.rglob("*.py"))


def forbidden(module: str | None) -> bool:
    return module is not None and any(
        module == name or module.startswith(name + ".") for name in FORBIDDEN)


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in the tree, at any depth (functions, try blocks,
    TYPE_CHECKING), including ``importlib.import_module("x")`` and ``__import__("x")``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def test_there_are_sources_to_check():
    names = {p.name for p in SOURCES}
    assert {"catalog.py", "kernels.py", "rating.py", "requests.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CHARGING)))
def test_charging_imports_no_service_clients(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [f"{path.name}:{line} imports {mod}" for line, mod in imported_modules(tree)
           if forbidden(mod)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, hit", [
    ("import redis", "redis"),
    ("import redis.asyncio as r", "redis.asyncio"),
    ("from redis.exceptions import ConnectionError", "redis.exceptions"),
    ("from confluent_kafka import Producer", "confluent_kafka"),
    ("import bytewax.operators as op", "bytewax.operators"),
    ("def f():\n    from bytewax.dataflow import Dataflow", "bytewax.dataflow"),
    ("try:\n    import redis\nexcept ImportError:\n    pass", "redis"),
    ("import importlib\nm = importlib.import_module('confluent_kafka.admin')",
     "confluent_kafka.admin"),
    ("k = __import__('redis')", "redis"),
])
def test_the_checker_finds_forbidden_imports(source, hit):
    mods = [m for _, m in imported_modules(ast.parse(source))]
    assert hit in mods and forbidden(hit)


@pytest.mark.parametrize("module", ["redisx", "charging.redis_keys", "bytewaxed", "orjson",
                                    "kafka", "numpy"])
def test_the_checker_allows_lookalike_names(module):
    assert not forbidden(module)
