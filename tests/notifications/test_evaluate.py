"""Crossings: each fires once, re-arms as documented, and replays change nothing."""

from __future__ import annotations

from charging.records import format_balance
from notifications.evaluate import Bucket, Slot, crossing_id, on_allowance, on_decision
from notifications.rules import Rule

LOW = Rule("low", below=(5_000_000, 1_000_000))
FINAL = Rule("last", final=True)
DATA = Rule("data", service="data", percent=(80, 100))


class Feed:
    """Decisions through one rule, keeping the slots as the notifier does."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.slots: dict[str, Slot] = {}
        self.events: list = []

    def decision(self, rid: str, balance: str, final: bool = False, granted: int = 60):
        micros = int(float(balance) * 1_000_000)  # test amounts have ≤ 2 decimals
        changed, found = on_decision(self.rule, "a1", rid, micros, final, granted, self.slots,
                                     format_balance)
        self.slots.update(changed)
        self.events += found
        return found

    def buckets(self, rid: str, *buckets: Bucket):
        changed, found = on_allowance(self.rule, "a1", rid, list(buckets), self.slots)
        self.slots.update(changed)
        self.events += found
        return found


def test_a_balance_falling_below_a_threshold_fires_once():
    f = Feed(LOW)
    assert f.decision("r1", "6.00") == []
    (e,) = f.decision("r2", "4.50")
    assert (e.type, e.threshold, e.value, e.request) == ("low_balance", "5.00", "4.50", "r2")
    assert f.decision("r3", "4.00") == []  # still below: no second event
    (e2,) = f.decision("r4", "0.50")  # the lower threshold crosses on its own
    assert e2.threshold == "1.00"
    assert len(f.events) == 2


def test_a_top_up_re_arms_and_the_next_crossing_is_a_new_event():
    f = Feed(LOW)
    (first,) = f.decision("r1", "4.00")
    f.decision("r2", "10.00")  # after a top-up
    (second,) = f.decision("r3", "3.00")
    assert first.id != second.id
    assert second.id == crossing_id("a1", "low|below|5000000", "2")


def test_a_replayed_decision_fires_nothing_and_re_arms_nothing():
    f = Feed(LOW)
    f.decision("r1", "4.00")
    f.decision("r2", "10.00")
    assert f.decision("r1", "4.00") == []  # the engine answers a repeated id the same
    f.decision("r3", "3.00")
    f.decision("r2", "10.00")  # a replayed re-arm is ignored
    assert f.decision("r4", "2.00") == []
    assert len(f.events) == 2


def test_the_same_crossing_gives_the_same_id_when_evaluated_again():
    a, b = Feed(LOW), Feed(LOW)
    assert a.decision("r1", "4.00")[0].id == b.decision("r1", "4.00")[0].id


def test_final_grant_fires_once_and_re_arms_on_a_grant_that_is_not_final():
    f = Feed(FINAL)
    assert f.decision("r1", "2.00", final=False) == []
    (e,) = f.decision("r2", "0.40", final=True, granted=20)
    assert (e.type, e.value, e.extra["balance"]) == ("final_grant", 20, "0.40")
    assert f.decision("r3", "0.10", final=True, granted=5) == []
    f.decision("r4", "9.00", final=False)
    assert len(f.decision("r5", "0.20", final=True)) == 1


def test_allowance_percentages_fire_once_per_period():
    f = Feed(DATA)
    assert f.buckets("c1", Bucket(1000, 300, "2026-11")) == []  # 70 % used
    (e,) = f.buckets("c2", Bucket(1000, 200, "2026-11"))  # exactly 80 %
    assert (e.type, e.threshold, e.value, e.extra["used"]) == ("allowance_used", 80, 80, 800)
    assert f.buckets("c3", Bucket(1000, 150, "2026-11")) == []
    (full,) = f.buckets("c4", Bucket(1000, 0, "2026-11"))
    assert full.threshold == 100
    assert f.buckets("c4", Bucket(1000, 0, "2026-11")) == []  # replay
    # the period renews: thresholds are armed again, and the new crossings have new ids
    assert f.buckets("c5", Bucket(1000, 1000, "2026-12")) == []
    (again,) = f.buckets("c6", Bucket(1000, 100, "2026-12"))
    assert again.threshold == 80 and again.id != e.id


def test_percent_is_exact_for_sizes_that_do_not_divide():
    f = Feed(Rule("d", service="data", percent=(80,)))
    assert f.buckets("c1", Bucket(3, 1, "-")) == []  # 66.6 %
    assert len(f.buckets("c2", Bucket(1073741824, 214748365, "-"))) == 0  # 79.99999 %
    assert len(f.buckets("c3", Bucket(1073741824, 214748364, "-"))) == 1
