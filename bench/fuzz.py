"""Coverage-guided fuzzing of request decoding, validation and rejects (atheris/libFuzzer).

    python -m bench.fuzz --minutes 5 [--corpus DIR] [--artifacts DIR] [-- LIBFUZZER_ARGS]

Every input becomes a payload in one of these ways (its first byte chooses): the bytes as
JSON, as MessagePack, as a ``str`` (lone surrogates kept), or spliced as the raw value of
one field (its second byte chooses which) into a valid request, JSON or MessagePack — so
that mutations reach the field checks, not only the decoders; or, in a field, arrays and
objects nested as deep as two bytes say (up to 4,095 levels: a mutation that byte-level
search would take long to find). For each, ``decode`` +
``parse`` must return a ``Request`` or raise ``RequestError``, and the reject must
serialise with orjson, under the interpreter's default recursion limit. Anything else is
a crash: libFuzzer stops, writes the input to ``--artifacts`` (``crash-<sha1>``) and the
command exits non-zero.

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

# charging first: under CHARGEFLOW_PURE it adds a finder of sources, which atheris's import
# hook, added next and so ahead of it, then instruments
import charging  # noqa: E402,F401

with atheris.instrument_imports(include=["charging.requests", "charging.untrusted"]):
    from charging.errors import RequestError
    from charging.requests import decode, parse, reject_record

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
    now = time.monotonic()
    if now - _stats["shown"] >= 30:
        _stats["shown"] = now
        print(f"[bench.fuzz] {_stats['execs']:,} execs in {now - _stats['t0']:.0f} s: "
              f"{_stats['requests']:,} requests, {_stats['rejects']:,} rejects, no crash",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--corpus", type=Path, default=None,
                    help="corpus directory, kept between runs (default: a temporary one)")
    ap.add_argument("--artifacts", type=Path, default=Path("bench/results/fuzz"),
                    help="where a crashing input is written")
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="chargeflow-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS):  # as JSON (mode 0) and as MessagePack (mode 1) inputs
        (corpus / f"seed-{i}").write_bytes(bytes([1 if seed[:1] != b"{" else 0, 0]) + seed)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)  # the engine's
    libfuzzer = [sys.argv[0], str(corpus), f"-max_total_time={int(args.minutes * 60)}",
                 "-print_final_stats=1", f"-artifact_prefix={args.artifacts}/",
                 "-max_len=70000", *extra]
    print(f"[bench.fuzz] {args.minutes:g} min, corpus {corpus}, crashes to {args.artifacts}/",
          file=sys.stderr, flush=True)
    atheris.Setup(libfuzzer, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
