"""The ``chargeflow`` command line (CONTRACT §5).

Exit codes: 0 success, 1 the input or request was wrong (the message says what and where),
2 a service could not be reached. Every command that prints a result takes ``--json``.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import click

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from api.cli import api_cmd, apikey
from billing.cli import archive, audit
from billing.cli_invoices import COMMANDS as BILLING_COMMANDS
from flows.cli_admin import accounts, balance, catalog, rate, stop, sweep_cmd, topup
from flows.cli_common import sample_catalog_path
from flows.cli_engine import demo, run
from flows.cli_gateway import gateway, serve
from flows.cli_notify import notify


class _Group(click.Group):
    """click exits 2 on a usage error; CONTRACT §5 keeps 2 for unreachable services, so a
    wrong command line exits 1 like any other wrong input."""

    def main(self, *args, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            exc.show()
            sys.exit(1)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="chargeflow")
def main() -> None:
    """chargeflow: a real-time online charging engine (rating, balances, quota grants)."""


for command in (catalog, accounts, balance, topup, sweep_cmd, stop, rate, run, demo,
                gateway, serve, notify, apikey, api_cmd, archive, audit,
                *BILLING_COMMANDS):
    main.add_command(command)


def _add_plugins() -> None:
    """Commands other packages add through the entry point group ``chargeflow.commands``
    (``chargeflow bench`` from the benchmarks), so the product imports none of them; one
    that cannot be loaded is left out with a debug line, the others still work."""
    for point in entry_points(group="chargeflow.commands"):
        if point.name in main.commands:
            continue
        try:
            main.add_command(point.load(), point.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
            logging.getLogger("chargeflow.cli").debug("command %s not loaded: %s",
                                                      point.name, exc)


_add_plugins()

__all__ = ["main", "sample_catalog_path"]


if __name__ == "__main__":
    main()
