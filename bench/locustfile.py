"""Load test with locust: subscribers behind a gateway that speaks to chargeflow over Kafka.

    locust -f bench/locustfile.py --headless -u 200 -r 50 -t 60s --csv bench/results/locust
    locust -f bench/locustfile.py        # the web UI, http://localhost:8089

Each locust user is one subscriber as its gateway sees it: voice calls (``initial``, an
``update`` each time the grant is used up or its validity ends, ``terminate``), data sessions
the same way, SMS ``event``s, with pauses between them. Every request is produced to
``chargeflow.requests`` keyed by account; the user waits for its decision (correlated by
``id`` on ``chargeflow.decisions``) before its next step, as a gateway holds a session until
it is answered. Session time runs ``--time-scale`` times real time (0.01: a 600 s validity
passes in 6 s), so a short run sees whole calls.

Locust statistics: one entry per request, type = kind, name = ``"<service> <kind>"``; a
decision other than SUCCESS is a normal outcome and counts as a success, with its result in
the name (``"voice initial [CREDIT_LIMIT_REACHED]"``). No decision within
``--decision-timeout`` seconds (or a reject, or a failed produce) is a failure.

Provisioning (in the local or master process, before the first user starts; workers get the
broker address from the master): by default everything is embedded in a temporary directory —
redis-server, the tansu broker, the sample catalog, ``--accounts`` accounts of which
``--dry-share`` hold a few cents, and ``chargeflow run`` as a child process — and the run
stops what it started when locust quits. ``--redis URL`` provisions that Redis instead;
``--kafka HOST:PORT`` uses that broker and an engine already running against it and the same
Redis (key prefix ``cf``, as the CLI uses). A ``--unknown-share`` of users charge accounts
that do not exist.

Kafka under gevent: one producer and one consumer per locust process, shared by its users
(``bench/load/kafka.py``). This file holds the options and the run's start and end; the
parts are in ``bench/load/``: the Kafka client, provisioning (``provision.py``, over
``flows/provision.py``) and the subscriber (``subscriber.py``).
"""

from __future__ import annotations

import atexit
import logging

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from bench.load.provision import provision, warm_up
from bench.load.subscriber import LoadContext, Subscriber, results_line

__all__ = ["Subscriber"]  # the user class locust runs (it finds it in this module)

log = logging.getLogger("chargeflow.locust")


# -- options ------------------------------------------------------------------------------------

@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--kafka", default=None, metavar="HOST:PORT", include_in_web_ui=False,
                        help="Broker with an engine already running against it (and --redis). "
                        "Default: an embedded broker and engine started by the run.")
    parser.add_argument("--redis", default=None, metavar="URL", include_in_web_ui=False,
                        help="Redis to provision (default $CHARGEFLOW_REDIS_URL, else an "
                        "embedded redis-server in --data-dir).")
    parser.add_argument("--data-dir", default=None, include_in_web_ui=False,
                        help="Directory of the embedded services (default: a temporary one, "
                        "removed at the end).")
    parser.add_argument("--accounts", type=int, default=10_000, include_in_web_ui=False,
                        help="Accounts provisioned for the run.")
    parser.add_argument("--dry-share", type=float, default=0.1, include_in_web_ui=False,
                        help="Share of subscribers whose accounts hold 0.30 and run dry.")
    parser.add_argument("--unknown-share", type=float, default=0.02,
                        help="Share of subscribers whose account does not exist.")
    parser.add_argument("--time-scale", type=float, default=0.01,
                        help="Wall-clock seconds per subscriber second (calls, validity, "
                        "pauses).")
    parser.add_argument("--decision-timeout", type=float, default=5.0,
                        help="Seconds to wait for a decision before counting a failure.")
    parser.add_argument("--fetch-wait-ms", type=int, default=5, include_in_web_ui=False,
                        help="fetch.wait.max.ms of the decision consumer: lower measures "
                        "latency closer, higher costs the broker fewer fetches.")


# -- the run's start and end, once per locust process -------------------------------------------

@events.init.add_listener
def _init(environment: Environment, **_kwargs) -> None:
    ctx = environment.chargeflow_load = LoadContext(environment)
    if isinstance(environment.runner, WorkerRunner):
        return  # the master provisions; its --kafka comes with the spawn message
    ctx.provisioned = provision(environment.parsed_options)
    atexit.register(ctx.close)  # should locust end without its quitting event
    try:
        environment.parsed_options.kafka = ctx.provisioned.brokers  # also sent to workers
        log.info("waiting for the engine to decide (warm-up)")
        warm_up(ctx.client(), ctx.provisioned)
        log.info("the engine decides: ready for load")
        if isinstance(environment.runner, MasterRunner):
            ctx.close_client()  # the workers play the users: no decisions to read here
    except BaseException:
        ctx.close()
        raise


@events.quitting.add_listener
def _quitting(environment: Environment, **_kwargs) -> None:
    ctx = getattr(environment, "chargeflow_load", None)
    if ctx is None:
        return
    if ctx.provisioned is not None:
        if environment.runner is not None:
            environment.runner.stop()  # users first: the services they use stop next
        log.info("decisions by result: %s", results_line(environment))
    ctx.close()
