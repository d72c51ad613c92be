"""Compile the engine's per-request modules to C extensions with mypyc (``make native``).

    python build_native.py             # build the extensions in place, beside the sources
    python build_native.py --if-stale  # only if one is missing or older than its source
    python build_native.py --clean     # remove them: the engine runs as plain Python again

The modules (``chargeflow_native.MODULES``, the one list of them) are what the engine runs
for every request: validation, the charging rules, the account state, the store's records and
the batch step.
They are ordinary typed Python; mypyc turns each into an extension module
(``charging/decide.cpython-311-...so``) that Python imports instead of the ``.py`` beside
it, with the same behaviour and about a third less CPU (bench/README.md, "Where the time
goes"). Everything else stays Python, and without a C compiler or with ``--clean`` the
whole engine runs as Python, unchanged.

An extension is built from its source at one moment: after a module is edited its old
extension would still be imported. ``make`` rebuilds them when a source is newer
(``--if-stale``), the test suite refuses to run on stale ones, and the engine logs a
warning (``chargeflow_native``). ``CHARGEFLOW_PURE=1`` runs the sources instead, without
removing anything. When the build fails (no C compiler, say), ``--if-stale`` removes the
old extensions, says so and exits 0: the engine then runs as Python.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from chargeflow_native import GROUP, MODULES, ROOT, extensions, library, stale


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    os.chdir(ROOT)
    began = time.time()  # a source saved during the build is newer than the build
    # remove the old files first rather than write over them: a running engine or test
    # process has them mapped, and rewriting a mapped library in place can crash it
    remove()
    setup(
        name="chargeflow-native",
        script_args=["--quiet", "build_ext", "--inplace", "--build-temp", "build/native"],
        ext_modules=mypycify(
            ["--ignore-missing-imports", "--follow-imports=silent", *MODULES],
            opt_level="3", group_name=GROUP),
    )
    # the library holds the code: date it when the build began (a build that found its C
    # unchanged leaves the file's own date alone); stale() compares the sources with that
    lib = library()
    if lib is None:
        raise RuntimeError("mypyc built no group library")
    os.utime(lib, (began, began))


def remove() -> list[Path]:
    """Delete the compiled files; the paths deleted."""
    found = extensions()
    for path in found:
        path.unlink()
    return found


def clean() -> None:
    for path in remove():
        print(f"removed {path.relative_to(ROOT)}")


def up_to_date() -> bool:
    return library() is not None and not stale()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled extensions")
    ap.add_argument("--if-stale", action="store_true",
                    help="build only if an extension is missing or older than its source; "
                         "if the build fails, run as Python (exit 0)")
    args = ap.parse_args(argv)
    if args.clean:
        clean()
    elif not args.if_stale:
        build()
    elif not up_to_date():
        print("compiling the per-request modules with mypyc (make native) ...", flush=True)
        try:
            build()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure: run as Python
            clean()
            print(f"could not compile them ({exc}); the engine runs as plain Python",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
