"""The load test's services and accounts, and the warm-up before the first user starts.

By default everything is embedded in a temporary directory — redis-server, the tansu broker,
the sample catalog and the accounts (``flows.provision``, as the demo, e2e and soak do), and
``chargeflow run`` as a child process; ``Provisioned.stop`` stops only what the run started.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from balances.accounts import AccountSpec
from bench.load.kafka import DecisionTimeout, GatewayClient, Reply
from flows import provision as provisioning
from flows.broker import EmbeddedBroker, ensure_topics
from flows.dataflow import Topics
from flows.gateway_sim import DESTINATIONS
from flows.services import ENV_URL, Services

log = logging.getLogger("chargeflow.locust")

PLAN = "PREPAID_S"  # the sample catalog's plan: voice, data, sms
BALANCE_MICROS = 1_000_000_000  # 1,000.00: enough for any run
DRY_BALANCE_MICROS = 300_000  # 0.30: an SMS or two, or a minute of talk, then dry
WARMUP_ACCOUNT = "load-warmup"


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
