"""`chargeflow rate`'s columnar path against its line-by-line reference: the same bytes.

``OfflineRater.rate_block`` must give what ``rate_lines`` gives (one request at a time, as
``chargeflow rate`` always did) for any input: well-formed requests on random catalogs of
every shape the model allows, values at and past their limits, unicode, and every kind of
bad line mixed in (charging/offline.py says which lines the fast path leaves to the
reference). Other tests check that the fast path really takes the well-formed lines, so
the comparison is not of the reference with itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charging import offline
from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
from charging.offline import OfflineRater, rate_lines
from charging.offline_kernels import rfc3339_ms
from charging.requests import _RFC3339, MAX_UNITS, parse_rfc3339
from charging.timezones import MAX_TS_MS, MIN_TS_MS
from tests.charging.conftest import SAMPLE_PATH
from tests.charging.strategies import timestamps, usages, valid_catalogs

SAMPLE = compile_catalog(parse_catalog(SAMPLE_PATH.read_text()))
TUE_PEAK = "2026-11-24T10:00:00+01:00"


def reference(compiled, lines: list[bytes], plan: str | None, first: int = 1) -> bytes:
    rated = rate_lines(compiled, list(enumerate(lines, first)), plan)
    return "".join(line + "\n" for line in rated).encode()


def columnar(compiled, lines: list[bytes], plan: str | None, first: int = 1) -> bytes:
    """The columnar path on the block's text, and on its lines split (as after msgspec
    refused the block): both must give the same."""
    whole = OfflineRater(compiled, plan).rate_block(b"\n".join(lines), first)
    split = OfflineRater(compiled, plan).rate_split(lines, first)
    assert whole == split
    saved = offline._PIECE
    offline._PIECE = 3  # pieces end everywhere
    try:
        assert OfflineRater(compiled, plan).rate_split(lines, first) == whole
    finally:
        offline._PIECE = saved
    return whole


# -- what requests are made of --------------------------------------------------------------

def rfc3339_texts():
    """RFC 3339 times of every shape the parser takes, and near misses: separators, 0-10
    fraction digits, Z/z/offsets (some of 24 hours or 60 minutes), impossible dates."""
    return st.builds(
        lambda y, mo, d, h, mi, s, sep, frac, zone: (
            f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"),
        st.one_of(st.integers(1969, 2100), st.integers(0, 9999)),
        st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 60),
        st.integers(0, 61), st.sampled_from("Tt x"),
        st.one_of(st.just(""), st.just("."), st.text("0123456789", min_size=1, max_size=11)
                  .map(lambda f: "." + f)),
        st.one_of(st.sampled_from(["Z", "z", "+01:00", "-05:30", "+00:00", "-00:00",
                                   "+23:59", "+24:00", "+01:60", "+1:00", ""]),
                  st.builds(lambda sg, hh, mm: f"{sg}{hh:02d}:{mm:02d}", st.sampled_from("+-"),
                            st.integers(0, 25), st.integers(0, 61))),
    )


@st.composite
def ts_values(draw, catalog):
    ms = draw(timestamps(catalog))
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return ms
    if kind <= 7:  # the instant as local time at some offset, in some shape
        off = draw(st.sampled_from([0, 60, -300, 330, 1439, -1439]))
        local = datetime(1970, 1, 1) + timedelta(milliseconds=ms + off * 60_000)
        zone = ("Z" if off == 0 and draw(st.booleans()) else
                f"{'+' if off >= 0 else '-'}{abs(off) // 60:02d}:{abs(off) % 60:02d}")
        frac = draw(st.sampled_from(["", f".{local.microsecond // 1000:03d}",
                                     f".{local.microsecond:06d}789", ".5"]))
        return local.strftime("%Y-%m-%dT%H:%M:%S") + frac + zone
    if kind == 8:
        return draw(rfc3339_texts())
    return draw(st.sampled_from([MIN_TS_MS - 1, MAX_TS_MS, MAX_TS_MS - 1, -1, 2**63, 2**70,
                                 True, 1.5, "yesterday", "", None]))


TEXT = st.text(max_size=12)  # any unicode but surrogates
IDS = st.one_of(st.text("abcxyz0123456789:-_", min_size=1, max_size=12), TEXT,
                st.sampled_from(["x" * 128, "x" * 129, "é" * 128, "\U0001F600" * 128,
                                 "\U0001F600" * 129, "a\"b", "a\\b", "tab\there", "a/b",
                                 "\u2028", "\x7f", ""]))
DESTINATIONS = st.one_of(
    st.text("0123456789", min_size=1, max_size=34),
    st.text("0123456789", min_size=1, max_size=33).map(lambda d: "+" + d),
    st.sampled_from(["", "+", "++49", "49 17", "4917x", "٤٩١٧", "4915" * 8, "+" + "4" * 32]),
    st.just(None), st.integers(0, 10**12))


GOOD_IDS = st.one_of(st.text("abcxyz0123456789:-_", min_size=1, max_size=12),
                     st.text(min_size=1, max_size=12).filter(lambda t: '"' not in t
                                                              and "\\" not in t),
                     st.sampled_from(["x" * 128, "é" * 128, "\U0001F600" * 128, "a/b"]))


@st.composite
def good_request_dicts(draw, compiled):
    """Requests the fast path takes, unless their rating is an error (no rate, a service
    not in the plan, over the limit)."""
    cat = compiled.catalog
    doc: dict = {"id": draw(GOOD_IDS), "service": draw(st.sampled_from(sorted(cat.services))),
                 "ts": draw(ts_values(cat).filter(lambda v: type(v) is int and MIN_TS_MS <= v
                                                  < MAX_TS_MS or type(v) is str))}
    if draw(st.integers(0, 4)):
        doc["used"] = draw(usages())
    if draw(st.booleans()):
        doc["destination"] = draw(st.one_of(st.text("0123456789", min_size=1, max_size=32),
                                            st.text("0123456789", min_size=1, max_size=32)
                                            .map(lambda d: "+" + d)))
    if draw(st.integers(0, 3)) == 0:
        doc["plan"] = draw(st.sampled_from(sorted(cat.plans)))
    if draw(st.integers(0, 5)) == 0:
        doc[draw(st.sampled_from(["destination", "plan", "used"]))] = None
    return {k: doc[k] for k in draw(st.permutations(list(doc)))}


@st.composite
def request_dicts(draw, compiled):
    cat = compiled.catalog
    doc: dict = {}
    if draw(st.integers(0, 20)):
        doc["id"] = draw(IDS) if draw(st.integers(0, 15)) else draw(
            st.sampled_from([None, 7, ["a"], {"x": 1}]))
    if draw(st.integers(0, 20)):
        doc["service"] = draw(st.one_of(st.sampled_from(sorted(cat.services)),
                                        st.sampled_from(["fax", "", "v" * 65, None, 3])))
    if draw(st.integers(0, 20)):
        doc["ts"] = draw(ts_values(cat))
    if draw(st.integers(0, 8)):
        doc["used"] = draw(st.one_of(usages(), st.sampled_from(
            [-1, MAX_UNITS + 1, 2**64, None, "5", 1.0, True, 0])))
    if draw(st.booleans()):
        doc["destination"] = draw(DESTINATIONS)
    if draw(st.integers(0, 4)) == 0:
        doc["plan"] = draw(st.one_of(st.sampled_from(sorted(cat.plans)),
                                     st.sampled_from(["NOPE", "", None, 1])))
    if draw(st.integers(0, 6)) == 0:  # what the fast path leaves to the reference
        key = draw(st.sampled_from(["kind", "account", "session", "seq", "requested",
                                    "reply_to", "note"]))
        doc[key] = draw(st.sampled_from(["event", "initial", "acct", "{x}", None, 3, 0,
                                         "topic.a", {"deep": [1]}]))
    keys = list(doc)
    return {k: doc[k] for k in draw(st.permutations(keys))}


@st.composite
def lines_of(draw, compiled):
    """Three lines in four well-formed (a separator with spaces in some), the others
    anything."""
    if draw(st.integers(0, 3)):
        sep = draw(st.sampled_from([None, None, None, (", ", ": ")]))
        doc = draw(good_request_dicts(compiled))
        if sep is None:
            return orjson.dumps(doc)
        return json.dumps(doc, ensure_ascii=False, separators=sep).encode()
    doc = draw(request_dicts(compiled))
    how = draw(st.integers(0, 19))
    try:
        if how <= 11:
            line = orjson.dumps(doc)
        elif how <= 13:
            line = json.dumps(doc, ensure_ascii=draw(st.booleans()),
                              separators=draw(st.sampled_from([(",", ":"), (", ", ": "),
                                                               (" ,", " : ")]))).encode()
        else:
            line = orjson.dumps(doc)
            line = draw(st.sampled_from([
                lambda b: b[:-1] + b',"id":"dup"}' if len(b) > 2 else b,  # a key twice
                lambda b: b + b" " + b,  # two values on one line
                lambda b: b[: len(b) // 2],  # cut short
                lambda b: b"\xef\xbb\xbf" + b,  # a byte order mark
                lambda b: b"  " + b + b" \r",  # spaces, a carriage return
                lambda b: b.replace(b"a", b"\xff", 1),  # not UTF-8
                lambda b: b"[" + b + b"]",
                lambda b: b"\x0c" + b,
                lambda b: b"{}",
                lambda b: b"   ",  # blank
                lambda b: b"",
                lambda b: b"null",
                lambda b: b'{"id":"n","used":01}',
                lambda b: b'{"id":"big","service":"voice","ts":1,"used":1e3}',
                lambda b: b'{"id":"c\x01","service":"voice","ts":1}',
            ]))(line)
    except TypeError:  # orjson refuses an integer past 64 bits: write it with json
        line = json.dumps(doc).encode()
    return line


@st.composite
def cases(draw):
    case = draw(valid_catalogs())
    compiled = compile_catalog(case.catalog)
    plan = draw(st.one_of(st.none(), st.sampled_from(sorted(case.catalog.plans))))
    lines = draw(st.lists(lines_of(compiled), min_size=0, max_size=40))
    return compiled, plan, lines


# -- the differential tests -----------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(1, 10**6))
def test_columnar_path_gives_the_reference_bytes(case, first):
    compiled, plan, lines = case
    assert columnar(compiled, lines, plan, first) == reference(compiled, lines, plan, first)


@st.composite
def sample_lines(draw):
    """Mostly well-formed requests for the sample catalog, some bad lines among them."""
    return draw(st.lists(lines_of(SAMPLE), min_size=1, max_size=60))


@settings(max_examples=300, deadline=None)
@given(sample_lines(), st.sampled_from([None, "PREPAID_S"]))
def test_columnar_path_on_the_sample_catalog(lines, plan):
    assert columnar(SAMPLE, lines, plan) == reference(SAMPLE, lines, plan)


def _well_formed(n: int, rng: np.random.Generator) -> list[bytes]:
    out = []
    for i in range(n):
        service = ["voice", "data", "sms"][i % 3]
        doc = {"id": f"r{i}-ü", "service": service,
               "ts": [TUE_PEAK, "2026-11-28T10:00:00Z", 1795856400000,
                      "2026-07-01 12:30:15.25+02:00"][i % 4],
               "used": int(rng.integers(0, 10**7))}
        if service == "voice":
            doc["destination"] = ["+4917612345", "4930123", "1555"][i % 3]
        out.append(orjson.dumps(doc))
    return out


def test_well_formed_lines_all_take_the_fast_path():
    lines = _well_formed(3000, np.random.default_rng(1))
    rater = OfflineRater(SAMPLE, None)
    assert rater.rate_block(b"\n".join(lines), 1) == reference(SAMPLE, lines, None)
    assert (rater.fast_lines, rater.slow_lines) == (3000, 0)


def test_bad_lines_go_one_by_one_and_the_rest_stays_fast():
    lines = _well_formed(2000, np.random.default_rng(2))
    bad = {17: b"not json", 400: b'{"id":"x","service":"voice","ts":1,"used":-1}',
           401: b'{"id":"y","service":"voice","ts":1,"used":1.5}', 1500: b"   ",
           1999: b'{"id":"z","service":"fax","ts":1,"used":1}'}
    for at, line in bad.items():
        lines[at] = line
    rater = OfflineRater(SAMPLE, None)
    assert rater.rate_block(b"\n".join(lines), 5) == reference(SAMPLE, lines, None, 5)
    assert rater.slow_lines == 4 and rater.fast_lines == 1995


@pytest.mark.parametrize("line", [
    b'{"id":"a","service":"voice","ts":1795856400000,"used":1,"id":"b"}',  # a key twice
    b'{"id":"a\\"b","service":"sms","ts":1795856400000,"used":1}',  # an escape
    b'{"id":"a","service":"sms","ts":1795856400000,"used":1,"kind":"event"}',
    b'{"id":"a","service":"sms","ts":"2026-11-24T24:00:00Z","used":1}',  # hour 24
    b'{"id":"a","service":"sms","ts":"2026-11-24T10:00:00+24:00","used":1}',
])
def test_what_the_fast_path_leaves_to_the_reference(line):
    rater = OfflineRater(SAMPLE, None)
    lines = _well_formed(10, np.random.default_rng(3)) + [line]
    assert rater.rate_block(b"\n".join(lines), 1) == reference(SAMPLE, lines, None)
    assert rater.slow_lines == 1


# -- the time parser ------------------------------------------------------------------------

@settings(max_examples=2000, deadline=None)
@given(st.one_of(rfc3339_texts(), st.text(max_size=40)))
def test_rfc3339_kernel_agrees_with_parse_rfc3339(text):
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    got = rfc3339_ms(raw, 0, raw.shape[0], MIN_TS_MS, MAX_TS_MS)
    want = parse_rfc3339(text)
    if got >= 0:  # where the kernel answers, it gives the reference's answer
        assert got == want
    elif want is not None and MIN_TS_MS <= want < MAX_TS_MS:
        assert not _plain(text)  # and it declines only what it leaves to the reference


def _plain(text: str) -> bool:
    """Hours 0-23, minutes and seconds 0-59, offsets under 24 hours with minutes 0-59."""
    m = _RFC3339.fullmatch(text)
    assert m, text
    clock = [int(text[k:k + 2]) for k in (11, 14, 17)]
    zone = m.group(3)
    offset = [0, 0] if zone in "Zz" else [int(zone[1:3]), int(zone[4:6])]
    return clock[0] <= 23 and clock[1] <= 59 and clock[2] <= 59 and offset[0] <= 23 \
        and offset[1] <= 59


def test_rfc3339_kernel_takes_the_common_shapes():
    for text in [TUE_PEAK, "2026-11-24T09:00:00Z", "2026-11-24t09:00:00z",
                 "2026-11-24 09:00:00.123456789-05:30", "1970-01-01T00:00:00Z",
                 "2099-12-31T23:59:59.999Z", "2024-02-29T12:00:00+00:00"]:
        raw = np.frombuffer(text.encode(), dtype=np.uint8)
        assert rfc3339_ms(raw, 0, raw.shape[0], MIN_TS_MS, MAX_TS_MS) == parse_rfc3339(text)
    for text in ["1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2026-02-29T00:00:00Z"]:
        raw = np.frombuffer(text.encode(), dtype=np.uint8)
        assert rfc3339_ms(raw, 0, raw.shape[0], MIN_TS_MS, MAX_TS_MS) == -1


def test_epoch_of_a_local_time_matches_datetime():
    for ms in (0, 1, 1795856400000, MAX_TS_MS - 1):
        dt = datetime.fromtimestamp(ms / 1000, UTC)
        text = dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
        raw = np.frombuffer(text.encode(), dtype=np.uint8)
        assert rfc3339_ms(raw, 0, raw.shape[0], MIN_TS_MS, MAX_TS_MS) == ms
