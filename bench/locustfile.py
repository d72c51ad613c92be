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

Kafka under gevent: one producer and one consumer per locust process, shared by its users.
librdkafka calls never block the event loop: ``produce`` + ``poll(0)``, and one greenlet that
reads decisions with ``consume(timeout=0)`` and sleeps 1 ms when there is nothing, waking the
user waiting for each id.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from locust import User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

import chargeflow_native  # noqa: F401 - first of ours: CHARGEFLOW_PURE=1 imports the sources
from balances.accounts import AccountSpec
from flows import provision as provisioning
from flows.broker import EmbeddedBroker, ensure_topics
from flows.dataflow import Topics
from flows.gateway_sim import DESTINATIONS
from flows.services import ENV_URL, Services

log = logging.getLogger("chargeflow.locust")

SUCCESS = "SUCCESS"
PLAN = "PREPAID_S"  # the sample catalog's plan: voice, data, sms
BALANCE_MICROS = 1_000_000_000  # 1,000.00: enough for any run
DRY_BALANCE_MICROS = 300_000  # 0.30: an SMS or two, or a minute of talk, then dry
WARMUP_ACCOUNT = "load-warmup"
PAUSE_S = (30.0, 300.0)  # subscriber time between two activities (scaled by --time-scale)
MEAN_CALL_S, MAX_CALL_S = 150.0, 3600.0  # voice call length, exponential, capped
DATA_SESSION_S = (60.0, 1800.0)
DATA_RATE = (math.log(100_000), 1.0, 5_000_000)  # bytes/s: lognormal mu, sigma, cap


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


# -- Kafka: one producer and one consumer per locust process ----------------------------------

class DecisionTimeout(Exception):
    """No decision came back in time (a failure in locust's statistics)."""


class Rejected(Exception):
    """The engine rejected the request as bad input (chargeflow.rejects)."""


class DeliveryFailed(Exception):
    """The broker did not take the request."""


@dataclass(frozen=True)
class Reply:
    doc: dict
    size: int  # bytes of the message
    received: float  # time.perf_counter() when the poller read it


class GatewayClient:
    """Requests out, decisions (and rejects) back, correlated by id; safe under gevent."""

    def __init__(self, brokers: str, fetch_wait_ms: int = 5, topics: Topics | None = None):
        self.brokers = brokers
        self.topics = topics or Topics()
        self.pending: dict[str, AsyncResult] = {}
        self.producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5,
                                  "queue.buffering.max.messages": 1_000_000})
        self.consumer = Consumer({"bootstrap.servers": brokers,
                                  "group.id": f"locust-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": fetch_wait_ms,
                                  "fetch.min.bytes": 1})
        self.poller: gevent.Greenlet | None = None

    def start(self, timeout_s: float = 10.0) -> GatewayClient:
        """Assign every partition of the output topics at their current end, then read.

        The end offsets are resolved here, before any request is produced, so that no
        decision of this run can fall before the position the consumer starts at.
        """
        assignment = []
        for topic in (self.topics.decisions, self.topics.rejects):
            try:
                meta = self.consumer.list_topics(topic, timeout=timeout_s).topics[topic]
            except KafkaException as exc:
                raise RuntimeError(f"cannot reach Kafka at {self.brokers}: {exc}") from exc
            if meta.error is not None or not meta.partitions:
                raise RuntimeError(f"topic {topic} is missing at {self.brokers} ({meta.error}): "
                                   "is `chargeflow run --kafka ...` running against it?")
            for p in sorted(meta.partitions):
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                              timeout=timeout_s, cached=False)
                assignment.append(TopicPartition(topic, p, high))
        self.consumer.assign(assignment)
        self.poller = gevent.spawn(self._read)
        self.poller.link_exception(lambda g: log.error("the decision reader stopped: %r",
                                                       g.exception))
        return self

    def ask(self, rid: str, key: str, value: bytes, timeout_s: float) -> Reply:
        """Produce one request and wait for its decision (``DecisionTimeout`` if none)."""
        waiter = self.pending[rid] = AsyncResult()
        while True:
            try:
                self.producer.produce(self.topics.requests, key=key.encode(), value=value,
                                      on_delivery=lambda err, _msg: self._delivered(rid, err))
                break
            except BufferError:  # the local queue is full: let librdkafka send, then retry
                self.producer.poll(0)
                gevent.sleep(0.001)
        self.producer.poll(0)
        try:
            return waiter.get(timeout=timeout_s)
        except gevent.Timeout:
            raise DecisionTimeout(f"no decision within {timeout_s:g} s") from None
        finally:
            self.pending.pop(rid, None)

    def _delivered(self, rid: str, err) -> None:
        waiter = self.pending.get(rid)
        if err is not None and waiter is not None:
            waiter.set_exception(DeliveryFailed(str(err)))

    def _read(self) -> None:
        while True:
            msgs = self.consumer.consume(1000, timeout=0)
            now = time.perf_counter()
            for msg in msgs:
                if msg.error() is not None:
                    continue
                value = msg.value()
                try:
                    doc = orjson.loads(value)
                    waiter = self.pending.get(str(doc.get("id")))
                except (orjson.JSONDecodeError, AttributeError):
                    continue  # not ours: outputs are JSON objects with an id
                if waiter is None or waiter.ready():
                    continue  # another run's, a replay's, or one given up on
                if msg.topic() == self.topics.rejects:
                    waiter.set_exception(Rejected(f"{doc.get('error')}: {doc.get('detail')}"))
                else:
                    waiter.set(Reply(doc, len(value), now))
            self.producer.poll(0)  # delivery reports
            gevent.sleep(0 if msgs else 0.001)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.kill()
        deadline = time.monotonic() + 5
        while len(self.producer) and time.monotonic() < deadline:
            self.producer.poll(0)
            gevent.sleep(0.01)
        self.consumer.close()
        self.producer.close()  # the connections go now: an embedded broker stops at once


# -- provisioning -----------------------------------------------------------------------------

def account_pools(n: int, dry_share: float) -> tuple[list[str], list[str]]:
    """(normal, dry) account ids: the same in every process of a run."""
    n_dry = max(1, round(n * dry_share)) if dry_share > 0 else 0
    return ([f"load-{i:06d}" for i in range(max(1, n - n_dry))],
            [f"load-dry-{i:06d}" for i in range(n_dry)])


@dataclass
class Provisioned:
    """The services of a run, and which of them it started: it stops only those."""

    data_dir: Path
    services: Services
    brokers: str = ""
    temp_dir: str | None = None
    engine: subprocess.Popen | None = None
    own_redis: bool = False
    own_broker: bool = False
    stopped: bool = False

    @property
    def engine_log(self) -> Path:
        return self.data_dir / "locust-engine.log"

    def engine_exited(self) -> str | None:
        """Why the engine is gone (with its log's tail), or None while it runs."""
        if self.engine is None or self.engine.poll() is None:
            return None
        try:
            tail = self.engine_log.read_text(errors="replace")[-3000:]
        except OSError:
            tail = ""
        return f"the engine exited with code {self.engine.returncode}:\n{tail}"

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.engine is not None and self.engine.poll() is None:
            self.engine.terminate()  # drains: finishes the batches it read, flushes
            try:
                self.engine.wait(30)
            except subprocess.TimeoutExpired:
                self.engine.kill()
                self.engine.wait(10)
        if self.own_broker:
            EmbeddedBroker(self.data_dir).stop()
        if self.own_redis:
            self.services.embedded.stop()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def provision(opts) -> Provisioned:
    """Catalog and accounts into Redis; broker and engine unless ``--kafka`` names them."""
    if opts.kafka and not (opts.redis or os.environ.get(ENV_URL) or opts.data_dir):
        raise SystemExit("--kafka needs the Redis its engine charges in: --redis URL, or "
                         "--data-dir DIR of the engine's embedded Redis")
    temp_dir = None if opts.data_dir else tempfile.mkdtemp(prefix="cf-locust-")
    data_dir = Path(opts.data_dir or temp_dir)
    services = Services.from_options(opts.redis, str(data_dir))
    p = Provisioned(data_dir, services, opts.kafka or "", temp_dir)
    try:
        p.own_redis = services.redis_url is None and not services.embedded.running()
        client = services.redis()
        normal, dry = account_pools(opts.accounts, opts.dry_share)
        provisioning.provision(
            client, services.prefix,
            [AccountSpec(a, PLAN, BALANCE_MICROS) for a in [WARMUP_ACCOUNT, *normal]]
            + [AccountSpec(a, PLAN, DRY_BALANCE_MICROS) for a in dry])
        client.close()
        log.info("provisioned %s accounts (%s dry) in %s", f"{len(normal) + len(dry):,}",
                 f"{len(dry):,}", services.redis_url or services.embedded.url)
        if not opts.kafka:
            broker = EmbeddedBroker(data_dir)
            p.own_broker = broker.address() is None
            p.brokers = broker.start()
            t = Topics()  # one partition each: the engine's one worker reads one partition
            ensure_topics(p.brokers, {t.requests: 1, t.decisions: 1, t.charges: 1,
                                      t.rejects: 1})
            args = [sys.executable, "-m", "flows.cli", "run", "--data-dir", str(data_dir),
                    "--kafka", p.brokers]
            if services.redis_url:
                args += ["--redis", services.redis_url]
            with open(p.engine_log, "ab") as out:
                p.engine = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            start_new_session=True)  # Ctrl+C is ours to pass
            log.info("engine started (pid %d) on broker %s; log %s", p.engine.pid, p.brokers,
                     p.engine_log)
    except BaseException:
        p.stop()
        raise
    return p


def warm_up(client: GatewayClient, p: Provisioned, timeout_s: float = 120.0) -> None:
    """Wait until the engine decides, then take every kind of request once through it
    (first calls of the kernels), so the run's figures do not include start-up."""
    deadline = time.monotonic() + timeout_s
    ts = int(time.time() * 1000)
    n = itertools.count()

    def ask(req: dict, wait_s: float) -> Reply:
        req = {"id": f"warmup-{uuid.uuid4().hex[:12]}-{next(n)}", "account": WARMUP_ACCOUNT,
               "ts": ts, **req}
        return client.ask(req["id"], req["account"], orjson.dumps(req), wait_s)

    while True:
        try:
            ask({"kind": "event", "service": "sms", "used": 0}, 2.0)
            break
        except DecisionTimeout:
            if (why := p.engine_exited()) is not None:
                raise RuntimeError(why) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"no decision came back from {client.brokers} within "
                                   f"{timeout_s:g} s: is the engine running?") from None
    for service, extra in (("voice", {"destination": DESTINATIONS[0]}), ("data", {})):
        session = f"warmup-{uuid.uuid4().hex[:12]}"
        for seq, kind in enumerate(("initial", "update", "terminate")):
            ask({"kind": kind, "service": service, "session": session, "seq": seq,
                 "used": 0 if seq == 0 else 1, **extra}, max(1.0, deadline - time.monotonic()))


# -- the run's state, one per locust process --------------------------------------------------

@dataclass
class LoadContext:
    """What the users of one locust process share: the Kafka client and user numbering."""

    environment: Environment
    provisioned: Provisioned | None = None
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    users: itertools.count = field(default_factory=itertools.count)
    _pools: tuple[list[str], list[str]] | None = None
    _client: GatewayClient | None = None
    _lock: Semaphore = field(default_factory=Semaphore)

    @property
    def options(self):
        return self.environment.parsed_options

    def client(self) -> GatewayClient:
        """The process's client, made on first use (a worker learns the broker late)."""
        with self._lock:
            if self._client is None:
                self._client = GatewayClient(self.options.kafka,
                                             self.options.fetch_wait_ms).start()
            return self._client

    def account_for(self, k: int) -> str:
        """Subscriber ``k``'s account: unknown, dry or normal, in the configured shares.

        Deterministic, so that even a handful of users has one of each kind: user 1 is the
        first dry one, user 2 the first unknown one.
        """
        opts = self.options
        worker = getattr(self.environment.runner, "worker_index", 0)
        if _every(k, opts.unknown_share, first=2):
            return f"unknown-{self.nonce}-{k}"
        if self._pools is None:
            self._pools = account_pools(opts.accounts, opts.dry_share)
        normal, dry = self._pools
        pool = dry if dry and _every(k, opts.dry_share, first=1) else normal
        return pool[(worker * 7919 + k) % len(pool)]

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self.close_client()
        if self.provisioned is not None:
            self.provisioned.stop()


def _every(k: int, share: float, first: int) -> bool:
    """True for a ``share`` of k = 0, 1, 2, ..., evenly spread, the first at ``first``."""
    j = k - first
    return share > 0 and j >= 0 and math.floor(j * share) > math.floor((j - 1) * share)


def context_of(environment: Environment) -> LoadContext:
    return environment.chargeflow_load  # set by _init


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


def results_line(environment: Environment) -> str:
    """Requests by decision result (from the entry names), and those with no decision."""
    counts: Counter = Counter()
    failed = 0
    for (name, _kind), entry in environment.stats.entries.items():
        m = re.search(r"\[(\w+)\]$", name)
        counts[m.group(1) if m else SUCCESS] += entry.num_requests - entry.num_failures
        failed += entry.num_failures
    parts = [f"{r} {n:,}" for r, n in counts.most_common() if n]
    return ", ".join(parts + [f"no decision {failed:,}"])


# -- the subscriber ---------------------------------------------------------------------------

class Subscriber(User):
    """One subscriber: calls, data sessions and SMS, each request answered before the next."""

    def on_start(self) -> None:
        self.ctx = context_of(self.environment)
        self.gateway = self.ctx.client()
        k = next(self.ctx.users)
        self.rnd = random.Random(f"{self.ctx.nonce}-{k}")
        self.account = self.ctx.account_for(k)
        self.tag = f"lc{self.ctx.nonce}-u{k}"
        self.n = itertools.count()

    def wait_time(self) -> float:
        return self.rnd.uniform(*PAUSE_S) * self.ctx.options.time_scale

    @task(5)
    def voice_call(self) -> None:
        length = round(min(self.rnd.expovariate(1 / MEAN_CALL_S), MAX_CALL_S)) + 1
        self.session("voice", length, 1.0, destination=self.rnd.choice(DESTINATIONS))

    @task(2)
    def data_session(self) -> None:
        mu, sigma, cap = DATA_RATE
        rate = min(self.rnd.lognormvariate(mu, sigma), cap)
        self.session("data", self.rnd.uniform(*DATA_SESSION_S), rate)

    @task(3)
    def sms(self) -> None:
        self.ask("event", "sms", _now_ms(), destination=self.rnd.choice(DESTINATIONS), used=1)

    def session(self, service: str, length_s: float, units_per_s: float, **extra) -> None:
        """initial; an update whenever the grant is used up or its validity ends; terminate.

        The gateway ends the session early when the balance funds no more (a ``final``
        grant used up, or an update refused), as a network cuts a call that runs dry.
        """
        session = f"{self.tag}-s{next(self.n)}"
        start_ms = _now_ms()
        d = self.ask("initial", service, start_ms, session, 0, **extra)
        elapsed, seq = 0.0, 0
        while d is not None and d.get("result") == SUCCESS:
            granted = d.get("granted") or 0
            exhausted_in = granted / units_per_s
            step = max(0.0, min(exhausted_in, d.get("validity_s") or 600, length_s - elapsed))
            gevent.sleep(step * self.ctx.options.time_scale)
            elapsed += step
            used = min(granted, round(step * units_per_s))
            seq += 1
            ts = start_ms + round(elapsed * 1000)
            if elapsed >= length_s or (d.get("final") and step >= exhausted_in):
                self.ask("terminate", service, ts, session, seq, used=used)
                return
            d = self.ask("update", service, ts, session, seq, used=used)
            if d is not None and d.get("result") != SUCCESS:
                self.ask("terminate", service, ts, session, seq + 1, used=0)

    def ask(self, kind: str, service: str, ts: int, session: str | None = None,
            seq: int | None = None, **fields) -> dict | None:
        """One request, reported to locust; its decision, or None when there was none."""
        if session is None:
            rid = f"{self.tag}-e{next(self.n)}"
            req = {"id": rid, "kind": kind, "account": self.account, "service": service,
                   "ts": ts, **fields}
        else:
            rid = f"{session}:{seq}"
            req = {"id": rid, "kind": kind, "account": self.account, "service": service,
                   "session": session, "seq": seq, "ts": ts, **fields}
        name = f"{service} {kind}"
        value = orjson.dumps(req)
        started = time.perf_counter()
        try:
            reply = self.gateway.ask(rid, self.account, value,
                                     self.ctx.options.decision_timeout)
        except (DecisionTimeout, Rejected, DeliveryFailed) as exc:
            self.environment.events.request.fire(
                request_type=kind, name=name, response_time=(time.perf_counter() - started)
                * 1000, response_length=0, exception=exc, context={"account": self.account})
            return None
        result = reply.doc.get("result")
        self.environment.events.request.fire(
            request_type=kind, name=name if result == SUCCESS else f"{name} [{result}]",
            response_time=(reply.received - started) * 1000, response_length=reply.size,
            exception=None, context={"account": self.account, "result": result})
        return reply.doc


def _now_ms() -> int:
    return int(time.time() * 1000)
