"""`chargeflow rate` reads its input in pieces and rates it in blocks: the output does not
depend on where the pieces and blocks end (the line-by-line reference is the oracle)."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from charging.catalog import parse_catalog
from charging.compiler import compile_catalog
from charging.offline import rate_lines
from flows import cli_admin
from flows.cli import main, sample_catalog_path

SAMPLE = str(sample_catalog_path())


def _input() -> bytes:
    lines = []
    for i in range(300):
        doc = {"id": f"r{i}", "service": ["voice", "data", "sms"][i % 3],
               "ts": "2026-11-24T10:00:00+01:00", "used": 61 * i}
        if i % 3 == 0:
            doc["destination"] = "+4917612345"
        lines.append(orjson.dumps(doc))
    lines[10] = b"this is not json"
    lines[11] = b""
    lines[50] = b"   \r"
    lines[51] = lines[51] + b"\r"
    lines[120] = b'{"id":"big","service":"voice","ts":1,"used":1,"pad":"' + b"x" * 70_000 + b'"}'
    lines[200] = b'{"id":"dup","service":"sms","ts":1,"used":1,"used":2}'
    return b"\n".join(lines)  # the last line has no newline


def _reference(data: bytes) -> str:
    compiled = compile_catalog(parse_catalog(sample_catalog_path().read_text()))
    rated = rate_lines(compiled, list(enumerate(data.split(b"\n"), 1)), None)
    return "".join(line + "\n" for line in rated)


@pytest.mark.parametrize(("read", "block"), [(1 << 22, 8192), (64, 7), (1000, 1), (333, 64)])
def test_output_does_not_depend_on_pieces_and_blocks(monkeypatch, read, block):
    monkeypatch.setattr(cli_admin, "RATE_READ", read)
    monkeypatch.setattr(cli_admin, "RATE_BLOCK", block)
    data = _input()
    res = CliRunner().invoke(main, ["rate", "--catalog", SAMPLE], input=data)
    assert res.exit_code == 0, res.output
    assert res.output == _reference(data)
    assert res.output.count("\n") == 298  # 300 lines, two blank
    assert '"error":"TOO_LARGE"' in res.output and '"error":"MALFORMED"' in res.output
