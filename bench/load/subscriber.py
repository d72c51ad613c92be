"""The load test's locust user: one subscriber as its gateway sees it, and what the users of
one locust process share (``LoadContext``: the Kafka client, the user numbering, the run's
services on the master or the local process)."""

from __future__ import annotations

import itertools
import math
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import gevent
import orjson
from gevent.lock import Semaphore
from locust import User, task
from locust.env import Environment

from bench.load.kafka import DecisionTimeout, DeliveryFailed, GatewayClient, Rejected
from bench.load.provision import Provisioned, account_pools
from flows.gateway_sim import DESTINATIONS

SUCCESS = "SUCCESS"
PAUSE_S = (30.0, 300.0)  # subscriber time between two activities (scaled by --time-scale)
MEAN_CALL_S, MAX_CALL_S = 150.0, 3600.0  # voice call length, exponential, capped
DATA_SESSION_S = (60.0, 1800.0)
DATA_RATE = (math.log(100_000), 1.0, 5_000_000)  # bytes/s: lognormal mu, sigma, cap


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
    return environment.chargeflow_load  # set by the locust file's init hook



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
