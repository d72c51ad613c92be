"""``chargeflow bench``: the benchmarks as a command of the CLI, a plugin of it.

The product never imports ``bench``: this group reaches ``chargeflow`` through the entry point
``chargeflow.commands`` (pyproject.toml), which ``flows.cli`` loads when it is installed.
"""

from __future__ import annotations

import click


@click.group("bench")
def bench() -> None:
    """Benchmarks (figures are reported, never asserted)."""


@bench.command("e2e", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True,
                                          "help_option_names": []})
@click.pass_context
def bench_e2e(ctx: click.Context) -> None:
    """Engine, baseline and echo floor through one broker and Redis (--help for options)."""
    from bench.e2e import main as e2e_main

    e2e_main(ctx.args)


@bench.command("soak", context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True,
                                           "help_option_names": []})
@click.pass_context
def bench_soak(ctx: click.Context) -> None:
    """The engine for minutes at a share of its capacity: RSS, drift, what Redis keeps."""
    from bench.soak import main as soak_main

    soak_main(ctx.args)


@bench.command("doors", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True,
                                          "help_option_names": []})
@click.pass_context
def bench_doors(ctx: click.Context) -> None:
    """Gy CCRs/s and Nchf requests/s through the gateway beside the Kafka round trip."""
    from bench.doors import main as doors_main

    doors_main(ctx.args)


@bench.command("api", context_settings={"ignore_unknown_options": True,
                                        "allow_extra_args": True,
                                        "help_option_names": []})
@click.pass_context
def bench_api(ctx: click.Context) -> None:
    """Account API reads and top-ups (locust) beside the engine under chargeflow serve."""
    from bench.apiload import main as api_main

    api_main(ctx.args)
