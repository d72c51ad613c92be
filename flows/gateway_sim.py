"""Synthetic gateway traffic: what a network sends to an OCS, as request dicts.

Voice calls (initial, interim updates, terminate) to a mix of mobile and fixed numbers, data
sessions, SMS events; a share of subscribers with little credit who run dry, and a share of
requests for accounts that do not exist. Open loop: the next request does not wait for the
previous decision, as a loaded gateway's does not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DESTINATIONS = ("4917612345", "4915112345", "4930123456", "4989765432", "33612345678")


@dataclass
class Gateway:
    accounts: list[str]
    seed: int = 7
    unknown_share: float = 0.01
    ts_ms: int = 1_795_510_800_000  # Tue 2026-11-24 10:00 Berlin (peak band)
    rnd: random.Random = field(init=False)
    open: list[list] = field(default_factory=list)  # [account, session, service, seq]
    n: int = 0

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)

    def next(self) -> dict:
        """The next request (a dict ready for JSON)."""
        self.n += 1
        rid = f"g{self.seed}-{self.n}"
        self.ts_ms += 7
        r = self.rnd.random()
        if r < self.unknown_share:
            return {"id": rid, "kind": "event", "account": f"nobody-{self.n % 97}",
                    "service": "sms", "ts": self.ts_ms, "used": 1}
        if r < 0.12 or (r < 0.55 and len(self.open) < 50):
            return self._initial(rid)
        if r < 0.80 and self.open:
            return self._step(rid, "update")
        if r < 0.92 and self.open:
            return self._step(rid, "terminate")
        account = self.rnd.choice(self.accounts)
        if self.rnd.random() < 0.7:
            return {"id": rid, "kind": "event", "account": account, "service": "sms",
                    "ts": self.ts_ms, "destination": self.rnd.choice(DESTINATIONS), "used": 1}
        return {"id": rid, "kind": "event", "account": account, "service": "data",
                "ts": self.ts_ms, "used": self.rnd.randint(1, 5_000_000)}

    def _initial(self, rid: str) -> dict:
        account = self.rnd.choice(self.accounts)
        service = "voice" if self.rnd.random() < 0.75 else "data"
        session = f"{rid}-s"
        self.open.append([account, session, service, 1])
        req = {"id": rid, "kind": "initial", "account": account, "service": service,
               "session": session, "seq": 0, "ts": self.ts_ms}
        if service == "voice":
            req["destination"] = self.rnd.choice(DESTINATIONS)
        return req

    def _step(self, rid: str, kind: str) -> dict:
        k = self.rnd.randrange(len(self.open))
        account, session, service, seq = self.open[k]
        if kind == "terminate":
            self.open[k] = self.open[-1]
            self.open.pop()
        else:
            self.open[k][3] += 1
        used = self.rnd.randint(1, 300) if service == "voice" else self.rnd.randint(1, 10**7)
        return {"id": rid, "kind": kind, "account": account, "service": service,
                "session": session, "seq": seq, "ts": self.ts_ms, "used": used}
