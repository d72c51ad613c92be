"""Which of the engine's per-request modules run compiled (mypyc), and whether any is stale.

``build_native.py`` compiles ``MODULES`` into extension modules beside their sources;
Python then imports the extension instead of the ``.py``. An extension older than its
source would run old code, so the engine warns about it (``warn_if_stale``) and the test
suite refuses to start (tests/conftest.py) until ``make native`` rebuilds it.

With ``CHARGEFLOW_PURE=1`` in the environment the sources are imported even where
extensions exist (each package's ``__init__`` imports this module first), so the same
checkout runs, tests and benchmarks either way.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What runs for every request (paths from the repository root): each package names its own
#: modules in its ``__init__`` (``register``), so this core names no outer layer; a process
#: that imported ``flows`` and ``balances`` has the whole list.
MODULES: list[str] = []
GROUP = "charging._native"  # mypyc's shared library of the group (charging/_native__mypyc...so)

log = logging.getLogger("chargeflow.native")


def register(*paths: str) -> None:
    """Add a package's per-request modules (before any of them is imported)."""
    for path in paths:
        if path not in MODULES:
            MODULES.append(path)


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


def extensions(root: Path = ROOT) -> list[Path]:
    """The compiled files present: each module's extension and the group's library."""
    found = [extension_of(root / m) for m in MODULES] + [library(root)]
    return [p for p in found if p is not None]


def stale(root: Path = ROOT) -> list[str]:
    """Modules that would run other code than their source: once any compiled file is
    present, loading one shim starts every module of the group from the library, so each
    module needs its shim and a library built after its source was saved (a build dates
    the library when it began, ``build_native.py``). Nothing is stale when nothing is
    compiled."""
    lib = library(root)
    shims = {m: extension_of(root / m) for m in MODULES}
    if lib is None:
        return [m for m, shim in shims.items() if shim is not None]
    built = lib.stat().st_mtime
    return [m for m, shim in shims.items()
            if shim is None or built < (root / m).stat().st_mtime]


def compiled() -> list[str]:
    """Modules of ``MODULES`` imported as compiled extensions in this process."""
    out = []
    for m in MODULES:
        mod = sys.modules.get(m[:-3].replace("/", "."))
        if mod is not None and not (getattr(mod, "__file__", "") or "").endswith(".py"):
            out.append(m)
    return out


def describe() -> str:
    """For the engine's start-up line: how many per-request modules run compiled."""
    for m in MODULES:  # each registered module imported, so that ``compiled`` sees it
        importlib.import_module(m[:-3].replace("/", "."))
    return (f"{len(compiled())} of {len(MODULES)} per-request modules compiled"
            f"{' (CHARGEFLOW_PURE=1)' if pure() else ''}")


def warn_if_stale() -> None:
    old = stale()
    if old:
        log.warning("compiled modules older than their sources, running old code: %s; "
                    "rebuild them with `make native` (or remove them: python "
                    "build_native.py --clean)", ", ".join(old))


class _Sources(importlib.abc.MetaPathFinder):
    """Finds ``MODULES`` as their ``.py`` sources, ahead of the extensions beside them."""

    def find_spec(self, fullname, path=None, target=None):
        source = fullname.replace(".", "/") + ".py"
        if source not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, ROOT / source)


def pure() -> bool:
    """True when ``CHARGEFLOW_PURE=1`` asks for the sources."""
    return os.environ.get("CHARGEFLOW_PURE", "") == "1"


if pure() and not any(isinstance(f, _Sources) for f in sys.meta_path):
    sys.meta_path.insert(0, _Sources())
