"""Coverage-guided fuzzing of the decoders (atheris/libFuzzer): engine requests, Diameter
messages, Nchf bodies.

    python -m bench.fuzz [--target request|diameter|nchf] --minutes 5 [--corpus DIR]
                         [--artifacts DIR] [-- LIBFUZZER_ARGS]

``--target diameter``: an input is a Diameter message as the Gy door's reader hands it on
(framing checked first: what fails it closes the connection); it is decoded, its Session-Id
and echo AVPs read, parsed as a CCR and planned as chargeflow requests (the sample catalog
with rating groups), and every request it plans must be one the engine accepts. The only
exception allowed is ``AnswerError``, and its error answer must encode. ``--target nchf``:
an input is a ChargingDataRequest body (seeded with an SMF's create and update); it is read
as the door does (JSON, the 3GPP schema, chargeflow's value limits), its units taken per
rating group for each unit kind, and the engine request of each rating group must be one
the engine accepts; the only exception allowed is ``Problem`` (a 4xx ProblemDetails).

``--target request`` (the default): every input becomes a payload in one of these ways (its
first byte chooses): the bytes as JSON, as MessagePack, as a ``str`` (lone surrogates kept),
or spliced as the raw value of one field (its second byte chooses which) into a valid
request, JSON or MessagePack — so that mutations reach the field checks, not only the
decoders; or, in a field, arrays and objects nested as deep as two bytes say (up to 4,095
levels: a mutation that byte-level search would take long to find). For each, ``decode`` +
``parse`` must return a ``Request`` or raise ``RequestError``, and the reject must serialise
with orjson, under the interpreter's default recursion limit. Anything else is a crash:
libFuzzer stops, writes the input to ``--artifacts`` (``crash-<sha1>``) and the command
exits non-zero.

The checked modules run as Python sources (``CHARGEFLOW_PURE=1``) so that atheris can
instrument them for coverage; the seed corpus holds valid requests and the known poisons.
The short, always-run version of these checks is tests/charging/test_requests_fuzz.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["CHARGEFLOW_PURE"] = "1"  # before charging is imported: instrumentable sources

import atheris  # noqa: E402 - a dev extra; see pyproject.toml
import msgpack  # noqa: E402
import orjson  # noqa: E402

# the machinery first: under CHARGEFLOW_PURE it adds a finder of sources, which atheris's
# import hook, added next and so ahead of it, then instruments
import chargeflow_native  # noqa: E402,F401

with atheris.instrument_imports(include=["charging.requests", "charging.untrusted",
                                          "gateway.diameter", "gateway.nchf", "diameter"]):
    from charging.errors import RequestError
    from charging.requests import decode, parse, reject_record
    from gateway.diameter import gy, wire
    from gateway.nchf.schemas import NchfSchemas, SchemaProblem
    from gateway.nchf.service import Problem, check_values
    from gateway.nchf.units import requested_units, usages, used_units

FIELDS = (b"id", b"kind", b"account", b"service", b"ts", b"used", b"requested", b"session",
          b"seq", b"destination", b"x-extra")
BASE = {"id": "f-1", "kind": "event", "account": "acct0", "service": "sms",
        "ts": 1_795_510_800_000, "used": 1}
SEEDS = [
    orjson.dumps(BASE),
    msgpack.packb(BASE),
    b'{"id":' + b"[" * 1000 + b"]" * 1000 + b',"kind":"event"}',
    b'{"id":"r","kind":"event","account":"alice","service":"sms","ts":1,"account":"bob"}',
    b'{"id":"r","kind":"event","used":' + b"9" * 5000 + b"}",
    b'{"id":"\\ud800","kind":"event"}',
    b"\x82\xa2id\xa1x\xa4kind" + b"\x81\xa1k" * 1000 + b"\xc0",
]
DEFAULT_RECURSION_LIMIT = 1000
_stats = {"execs": 0, "requests": 0, "rejects": 0, "t0": time.monotonic(), "shown": 0.0}


def payload_of(data: bytes) -> tuple[bytes | str, str]:
    """The payload and format an input stands for (module docstring)."""
    if len(data) < 2:
        return data, "json"
    mode, pick, body = data[0] % 7, data[1], data[2:]
    if mode >= 5:  # nesting: two bytes say how deep, the rest which containers, then a leaf
        levels = int.from_bytes(body[:2], "big") % 4096
        shape = body[2:] or b"\x00"
        kinds = [shape[i % len(shape)] % 2 for i in range(levels)]
        if mode == 5:
            value = b"".join(b'{"k":' if k else b"[" for k in kinds) + b"1" + \
                b"".join(b"}" if k else b"]" for k in reversed(kinds))
            return payload_of(bytes([3, pick]) + value)
        value = b"".join(b"\x81\xa1k" if k else b"\x91" for k in kinds) + b"\x01"
        return payload_of(bytes([4, pick]) + value)
    if mode == 0:
        return body, "json"
    if mode == 1:
        return body, "msgpack"
    if mode == 2:  # a str: invalid UTF-8 bytes become lone surrogates, or latin-1 letters
        return body.decode("utf-8", "surrogateescape") if pick % 2 else body.decode("latin-1"), \
            "json"
    field = FIELDS[pick % len(FIELDS)]
    rest = {k: v for k, v in BASE.items() if k.encode() != field}
    if mode == 3:
        return orjson.dumps(rest)[:-1] + b',"' + field + b'":' + body + b"}", "json"
    pairs = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in rest.items())
    return bytes([0x80 | (len(rest) + 1)]) + pairs + msgpack.packb(field.decode()) + body, \
        "msgpack"


def check(data: bytes) -> None:
    """The fuzz target: raises (a crash) when the checks of the docstring fail."""
    payload, fmt = payload_of(data)
    _stats["execs"] += 1
    try:
        parse(decode(payload, fmt))
        _stats["requests"] += 1
    except RequestError as exc:
        orjson.dumps(reject_record(exc, payload))
        _stats["rejects"] += 1
    _progress()


# -- the doors --------------------------------------------------------------------------------

def _catalog():
    from bench.doors import catalog_text
    from charging.catalog import parse_catalog

    return parse_catalog(catalog_text())


def diameter_seeds() -> list[bytes]:
    """CCRs a PGW sends: an initial with two rating groups, an update, an event."""
    from diameter.message import Message, MessageHeader
    from diameter.message import constants as c

    def ccr(kind: int, number: int, mscc: list) -> bytes:
        avps = [wire.new(c.AVP_SESSION_ID, "pgw;fuzz;1"), wire.new(c.AVP_ORIGIN_HOST, b"pgw"),
                wire.new(c.AVP_ORIGIN_REALM, b"fuzz"),
                wire.new(c.AVP_DESTINATION_REALM, b"localdomain"),
                wire.new(c.AVP_AUTH_APPLICATION_ID, 4),
                wire.new(c.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
                wire.new(c.AVP_CC_REQUEST_TYPE, kind), wire.new(c.AVP_CC_REQUEST_NUMBER, number),
                wire.new(c.AVP_SUBSCRIPTION_ID, [wire.new(c.AVP_SUBSCRIPTION_ID_TYPE, 0),
                                                 wire.new(c.AVP_SUBSCRIPTION_ID_DATA,
                                                          "491700000001")]), *mscc]
        return Message(MessageHeader(1, 0, 0x80, 272, 4, 1, 1), avps).as_bytes()

    def mscc(rg: int, requested: int | None, used: int | None) -> object:
        inner = [wire.new(c.AVP_RATING_GROUP, rg)]
        if requested is not None:
            inner.append(wire.new(c.AVP_REQUESTED_SERVICE_UNIT,
                                  [wire.new(c.AVP_CC_TIME, requested)] if requested else []))
        if used is not None:
            inner.append(wire.new(c.AVP_USED_SERVICE_UNIT, [wire.new(c.AVP_CC_TOTAL_OCTETS,
                                                                     used)]))
        return wire.new(c.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, inner)

    return [ccr(1, 0, [mscc(100, 0, None), mscc(200, 0, None)]),
            ccr(2, 1, [mscc(200, 0, 5_000_000_000)]),
            ccr(4, 0, [wire.new(c.AVP_REQUESTED_ACTION, 0), mscc(300, None, None)])]


def nchf_seeds() -> list[bytes]:
    from bench.doors import nchf_body, nchf_usage

    return [orjson.dumps(nchf_body(1, 0, None)), orjson.dumps(nchf_body(1, 3, nchf_usage(3)))]


class DoorTargets:
    """The decoder paths of the two doors, with what they need built once."""

    def __init__(self, target: str):
        self.catalog = _catalog()
        self.schemas = NchfSchemas() if target == "nchf" else None
        self.record = gy.Record("acct0", {100: "voice", 200: "data"})

    def diameter(self, data: bytes) -> None:
        if len(data) < 20 or data[0] != 1 or int.from_bytes(data[1:4], "big") != len(data) \
                or len(data) % 4:
            return  # the reader's NotDiameter: the connection is closed
        try:
            msg = wire.decode(data)
            gy.session_id_of(msg)
            gy.echo_avps(msg)
            ccr = gy.parse_ccr(msg)
            steps = gy.plan(ccr, "acct0", self.record, self.catalog, BASE["ts"],
                            lambda service: 300)
        except wire.AnswerError as err:
            wire.error_answer(wire.decode_header(data), err, "ocs", "realm", "s", [])
            _stats["rejects"] += 1
            return
        for st in steps:
            if st.request is not None:
                parse(st.request)  # a RequestError here is the door's defect: a crash
        _stats["requests"] += 1

    def nchf(self, data: bytes) -> None:
        try:
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise Problem(400, "Bad Request", "not JSON", "INVALID_MSG_FORMAT") from None
            try:
                self.schemas.check(body)
            except SchemaProblem:
                raise Problem(400, "Bad Request", "not schema-valid",
                              "MANDATORY_IE_INCORRECT") from None
            check_values(body)
        except Problem as problem:
            assert 400 <= problem.status < 500, problem.status
            _stats["rejects"] += 1
            return
        for rg, usage in usages(body).items():
            for unit in ("second", "byte", "event"):
                used, requested = used_units(usage, unit), requested_units(usage, unit)
                for kind in ("initial", "update", "terminate"):
                    req = {"id": f"nchf:r:{rg}:1", "kind": kind, "account": "acct0",
                           "service": "data", "session": f"nchf:r:{rg}",
                           "seq": 0 if kind == "initial" else 1,
                           "ts": body["invocationTimeStamp"], "used": used}
                    if kind != "terminate":
                        req["requested"] = requested
                    parse(req)  # a RequestError: the door would build what the engine refuses
        _stats["requests"] += 1


def door_check(targets: DoorTargets, target: str):
    fn = getattr(targets, target)

    def check_door(data: bytes) -> None:
        _stats["execs"] += 1
        fn(data)
        _progress()

    return check_door


def _progress() -> None:
    now = time.monotonic()
    if now - _stats["shown"] >= 30:
        _stats["shown"] = now
        print(f"[bench.fuzz] {_stats['execs']:,} execs in {now - _stats['t0']:.0f} s: "
              f"{_stats['requests']:,} accepted, {_stats['rejects']:,} refused, no crash",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=("request", "diameter", "nchf"), default="request",
                    help="what to fuzz: engine requests, Diameter messages, Nchf bodies")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--corpus", type=Path, default=None,
                    help="corpus directory, kept between runs (default: a temporary one)")
    ap.add_argument("--artifacts", type=Path, default=Path("bench/results/fuzz"),
                    help="where a crashing input is written")
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="chargeflow-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    if args.target == "request":
        for i, seed in enumerate(SEEDS):  # as JSON (mode 0) and MessagePack (mode 1) inputs
            (corpus / f"seed-{i}").write_bytes(bytes([1 if seed[:1] != b"{" else 0, 0]) + seed)
        target = check
    else:
        seeds = diameter_seeds() if args.target == "diameter" else nchf_seeds()
        for i, seed in enumerate(seeds):
            (corpus / f"{args.target}-seed-{i}").write_bytes(seed)
        target = door_check(DoorTargets(args.target), args.target)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)  # the engine's
    libfuzzer = [sys.argv[0], str(corpus), f"-max_total_time={int(args.minutes * 60)}",
                 "-print_final_stats=1", f"-artifact_prefix={args.artifacts}/",
                 "-max_len=70000", *extra]
    print(f"[bench.fuzz] {args.target}: {args.minutes:g} min, corpus {corpus}, crashes to "
          f"{args.artifacts}/", file=sys.stderr, flush=True)
    atheris.Setup(libfuzzer, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
