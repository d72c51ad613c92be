"""The wheel's build step beyond pyproject.toml: the engine's per-request modules compiled.

``pip install .`` (and the Docker image, which installs the wheel it builds) compiles
``chargeflow_native.MODULES`` with mypyc into extension modules shipped beside their
sources, so an installed engine runs as fast as a ``make native`` checkout (bench/README.md,
"Compiled modules on the installed path"). The build needs a C compiler; without one, or
with ``CHARGEFLOW_NATIVE=0`` in the environment, the wheel holds the sources alone and runs
them, with the same behaviour.

An editable install (``pip install -e .``, ``make setup``) compiles nothing: ``make native``
(``build_native.py``) builds a checkout's extensions in place and keeps them current.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.dist import Distribution

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chargeflow_native import GROUP, MODULES  # noqa: E402 - the checkout's own module


def wanted() -> bool:
    return os.environ.get("CHARGEFLOW_NATIVE", "1") != "0"


def say(why: str) -> None:
    print(f"chargeflow: {why}; the wheel holds their sources and runs them as Python",
          file=sys.stderr)


class CompiledDistribution(Distribution):
    """A distribution with extension modules (so that the wheel is tagged for this Python
    and platform), made only when ``build_ext`` runs."""

    def has_ext_modules(self) -> bool:
        return wanted()


class CompileModules(build_ext):
    """``build_ext`` that asks mypyc for the extensions when it runs, not when setup.py is
    read (metadata steps never compile), and that leaves a wheel of sources when the
    compile fails."""

    def finalize_options(self) -> None:
        editable = "editable_wheel" in self.distribution.command_obj
        if wanted() and not (editable or self.inplace):
            try:
                from mypyc.build import mypycify

                self.distribution.ext_modules = mypycify(
                    ["--ignore-missing-imports", "--follow-imports=silent", *MODULES],
                    opt_level="3", group_name=GROUP)
            except Exception as exc:  # noqa: BLE001 - any failure: a wheel of sources
                say(f"mypyc could not translate the per-request modules ({exc})")
        super().finalize_options()

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no C compiler, say: a wheel of sources
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            say(f"could not compile the per-request modules ({exc})")


setup(distclass=CompiledDistribution, cmdclass={"build_ext": CompileModules})
