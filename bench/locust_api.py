"""Load test of the account API (CONTRACT §7) with locust: balance reads and top-ups.

    locust -f bench/locust_api.py --headless --host http://127.0.0.1:8080 \\
        --keys KEYS.json --read-rate 2000 --topup-rate 100 -t 30s --csv OUT
    chargeflow bench api ...     # starts chargeflow serve, provisions, and runs this file

``--keys`` names a JSON file ``{"selfcare": [[key, account], ...], "agent": [key, ...]}``
(``bench.apiload`` writes one). Each read user is one self-care app: its own ``selfcare``
key reading its own account (``GET /v1/accounts/{id}``); each top-up user one payment
channel with its own ``agent`` key, topping up an account of the keys' list (``POST
/v1/accounts/{id}/topups``, a fresh ``Idempotency-Key`` each). One user per key, so no key
goes over its request rate (``chargeflow api --rate-limit``, 50/s by default): the users are
paced with ``constant_throughput`` so that together they offer ``--read-rate`` and
``--topup-rate`` requests/s. Any answer but 200 (reads) or 201 (top-ups) is a failure.

Locust statistics: name ``read`` and ``topup``; locust keeps response times in buckets of
two significant figures (a p99 of 23 ms is 22.5–23.5 ms).
"""

from __future__ import annotations

import itertools
import uuid

import orjson
from locust import FastHttpUser, between, constant_throughput, events, task

_keys: dict = {"selfcare": [], "agent": []}
_reader_slots = itertools.count()
_topup_slots = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--keys", default="", help="JSON file of the keys (see the docstring)")
    parser.add_argument("--read-rate", type=float, default=0.0,
                        help="balance reads/s offered, in all")
    parser.add_argument("--topup-rate", type=float, default=0.0,
                        help="top-ups/s offered, in all")


@events.init.add_listener
def _setup(environment, **_kw) -> None:
    opts = environment.parsed_options
    if opts is None or not opts.keys:
        return
    with open(opts.keys, "rb") as f:
        _keys.update(orjson.loads(f.read()))
    readers, payers = len(_keys["selfcare"]), len(_keys["agent"])
    ReadUser.fixed_count = readers if opts.read_rate > 0 else 0
    TopupUser.fixed_count = payers if opts.topup_rate > 0 else 0
    if readers and opts.read_rate > 0:
        ReadUser.wait_time = constant_throughput(opts.read_rate / readers)
    if payers and opts.topup_rate > 0:
        TopupUser.wait_time = constant_throughput(opts.topup_rate / payers)


class ReadUser(FastHttpUser):
    """A self-care app: its own key, its own account's balance."""

    fixed_count = 0
    wait_time = between(1, 1)

    def on_start(self) -> None:
        key, self.account = _keys["selfcare"][next(_reader_slots) % len(_keys["selfcare"])]
        self.headers = {"Authorization": f"Bearer {key}"}

    @task
    def read(self) -> None:
        with self.client.get(f"/v1/accounts/{self.account}", headers=self.headers,
                             name="read", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")


class TopupUser(FastHttpUser):
    """A payment channel: an agent key topping up the accounts in turn."""

    fixed_count = 0
    wait_time = between(1, 1)

    def on_start(self) -> None:
        slot = next(_topup_slots)
        self.headers = {"Authorization": f"Bearer {_keys['agent'][slot % len(_keys['agent'])]}",
                        "Content-Type": "application/json"}
        accounts = [a for _, a in _keys["selfcare"]]
        self.accounts = itertools.cycle(accounts[slot % len(accounts):] +
                                        accounts[:slot % len(accounts)])
        self.body = orjson.dumps({"amount": "1.00", "reason": "bench top-up"})

    @task
    def topup(self) -> None:
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        with self.client.post(f"/v1/accounts/{next(self.accounts)}/topups", data=self.body,
                              headers=headers, name="topup", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")
