"""Which of the engine's per-request modules run compiled (mypyc), and whether any is stale.

This module is the whole of the compiled-module machinery at run time, outside the product's
packages: none of them imports it for a side effect, and the core (``charging``) never
imports it at all. ``build_native.py`` compiles ``MODULES`` into extension modules beside
their sources; Python then imports the extension instead of the ``.py``. An extension older
than its source would run old code, so the engine warns about it (``warn_if_stale``) and
the test suite refuses to start (tests/conftest.py) until ``make native`` rebuilds it.

``CHARGEFLOW_PURE=1`` in the environment imports the sources even where extensions exist,
so the same checkout runs, tests and benchmarks either way. It takes effect when this module
is imported, so every program of the project imports it before anything else of ours: the
``chargeflow`` command (``flows/cli.py``), each ``python -m bench.…`` module, the locust
file and the test suite's ``tests/conftest.py`` (tests/test_native.py checks that they do).
A script of your own that should honour it starts with ``import chargeflow_native``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path

#: The directory the packages sit in (the repository root, or site-packages when installed).
ROOT = Path(__file__).resolve().parent

#: What runs for every request, as paths from ``ROOT``: the modules ``build_native.py``
#: compiles, all of them here and nowhere else.
MODULES: list[str] = [
    "charging/money.py",
    "charging/state.py",
    "charging/requests.py",
    "charging/records.py",
    "charging/allowances.py",
    "charging/decide.py",
    "charging/columnar.py",
    "balances/codec.py",
    "balances/charger.py",
    "flows/engine.py",
]
GROUP = "charging._native"  # mypyc's shared library of the group (charging/_native__mypyc...so)

log = logging.getLogger("chargeflow.native")


def module_name(path: str) -> str:
    """``charging/decide.py`` -> ``charging.decide``."""
    return path[:-3].replace("/", ".")


def extension_of(source: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = source.with_suffix(suffix)
        if path.exists():
            return path
    return None


def library(root: Path = ROOT) -> Path | None:
    """The group's shared library, which holds the compiled code of every module (each
    module's own extension is a small shim that loads it)."""
    package, _, name = GROUP.rpartition(".")
    return extension_of(root / package.replace(".", "/") / f"{name}__mypyc.py")


def extensions(root: Path = ROOT, modules: list[str] = MODULES) -> list[Path]:
    """The compiled files present: each module's extension and the group's library."""
    found = [extension_of(root / m) for m in modules] + [library(root)]
    return [p for p in found if p is not None]


def stale(root: Path = ROOT, modules: list[str] = MODULES) -> list[str]:
    """Modules that would run other code than their source: once any compiled file is
    present, loading one shim starts every module of the group from the library, so each
    module needs its shim and a library built after its source was saved (a build dates
    the library when it began, ``build_native.py``). Nothing is stale when nothing is
    compiled, and nothing in an installed package: there, its files all come from one wheel
    (built by ``setup.py``), dated by their installation in no particular order; only a
    checkout (where ``build_native.py`` is) has sources that can be edited after a build."""
    if not (root / "build_native.py").is_file():
        return []
    lib = library(root)
    shims = {m: extension_of(root / m) for m in modules}
    if lib is None:
        return [m for m, shim in shims.items() if shim is not None]
    built = lib.stat().st_mtime
    return [m for m, shim in shims.items()
            if shim is None or built < (root / m).stat().st_mtime]


def compiled(modules: list[str] = MODULES) -> list[str]:
    """Modules of ``modules`` imported as compiled extensions in this process."""
    out = []
    for m in modules:
        mod = sys.modules.get(module_name(m))
        if mod is not None and not (getattr(mod, "__file__", "") or "").endswith(".py"):
            out.append(m)
    return out


def describe() -> str:
    """For the engine's start-up line: how many per-request modules run compiled."""
    for m in MODULES:  # each module imported, so that ``compiled`` sees it
        importlib.import_module(module_name(m))
    return (f"{len(compiled())} of {len(MODULES)} per-request modules compiled"
            f"{' (CHARGEFLOW_PURE=1)' if pure() else ''}")


def warn_if_stale() -> None:
    old = stale()
    if old:
        log.warning("compiled modules older than their sources, running old code: %s; "
                    "rebuild them with `make native` (or remove them: python "
                    "build_native.py --clean)", ", ".join(old))


class Sources(importlib.abc.MetaPathFinder):
    """Finds ``modules`` as their ``.py`` sources under ``root``, ahead of the extensions
    beside them."""

    def __init__(self, root: Path = ROOT, modules: list[str] = MODULES) -> None:
        self.root = root
        self.modules = modules

    def find_spec(self, fullname, path=None, target=None):
        source = fullname.replace(".", "/") + ".py"
        if source not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, self.root / source)


def pure() -> bool:
    """True when ``CHARGEFLOW_PURE=1`` asks for the sources."""
    return os.environ.get("CHARGEFLOW_PURE", "") == "1"


def use_sources() -> None:
    """Import ``MODULES`` from their sources from now on (once per process). A module
    already imported compiled stays so: that is said, since the run would not be pure."""
    if any(isinstance(f, Sources) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, Sources())
    early = compiled()
    if early:
        log.warning("CHARGEFLOW_PURE=1 came after these modules were imported compiled: %s; "
                    "import chargeflow_native before anything of chargeflow",
                    ", ".join(early))


if pure():
    use_sources()
