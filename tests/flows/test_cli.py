"""The `chargeflow` command line: rate, catalog validate, demo (CONTRACT §5)."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from click.testing import CliRunner

from flows.cli import main, sample_catalog_path

SAMPLE = str(sample_catalog_path())
TUE_PEAK = "2026-11-24T10:00:00+01:00"


def run(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(main, args, input=stdin)


def jsonl(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_rate_answers_every_line_in_order_with_errors_in_place():
    lines = [
        {"id": "a", "service": "voice", "destination": "+4917612345", "ts": TUE_PEAK, "used": 61},
        "this is not json",
        {"id": "b", "service": "voice", "ts": TUE_PEAK, "used": -1},
        {"id": "c", "service": "fax", "ts": TUE_PEAK, "used": 1},
        {"id": "d", "service": "voice", "destination": "4930123", "ts": TUE_PEAK, "used": 1},
        {"id": "e", "service": "sms", "ts": TUE_PEAK, "used": 2, "plan": "NO_SUCH_PLAN"},
        {"id": "f", "service": "data", "ts": 1795856400000, "used": 1500},
    ]
    text = "\n".join(x if isinstance(x, str) else orjson.dumps(x).decode() for x in lines)
    res = run(["rate", "--catalog", SAMPLE], text + "\n\n")
    assert res.exit_code == 0, res.output
    out = jsonl(res.output)
    assert [o["id"] for o in out] == ["a", None, "b", "c", "d", "e", "f"]
    assert out[0] == {"id": "a", "cost": "0.1515", "rated_units": 61, "tariff": "VOICE_STD",
                      "rate": "mobile_peak"}
    assert out[1]["error"] == "MALFORMED" and "line 2" in out[1]["detail"]
    assert out[2]["error"] == "INVALID_FIELD" and "'used'" in out[2]["detail"]
    assert out[3]["error"] == "END_USER_SERVICE_DENIED"
    assert out[4]["cost"] == "0.2000" and out[4]["rate"] == "other"
    assert out[5]["error"] == "INVALID_FIELD" and "NO_SUCH_PLAN" in out[5]["detail"]
    assert out[6]["cost"] == "0.0001" and out[6]["rated_units"] == 2048


def test_rate_reads_a_file_argument(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text(orjson.dumps({"id": "x", "service": "voice", "destination": "4917612345",
                               "ts": "2026-11-28T10:00:00+01:00", "used": 61}).decode())
    res = run(["rate", "--catalog", SAMPLE, str(f)])
    assert jsonl(res.output) == [{"id": "x", "cost": "0.1220", "rated_units": 61,
                                  "tariff": "VOICE_STD", "rate": "mobile"}]


def test_rate_rejects_unknown_plan_option_before_reading():
    res = run(["rate", "--catalog", SAMPLE, "--plan", "GOLD"], "")
    assert res.exit_code == 1
    assert "GOLD" in res.output and "PREPAID_S" in res.output


def test_rate_with_invalid_catalog_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(sample_catalog_path().read_text().replace('increment: 60}', 'increment: 7}'))
    res = run(["rate", "--catalog", str(bad)], "")
    assert res.exit_code == 1
    assert "not a multiple of its increment 7" in res.output


def test_validate_lists_every_problem_and_exits_1(tmp_path):
    text = (sample_catalog_path().read_text()
            .replace("timezone: Europe/Berlin", "timezone: Mars/Olympus")
            .replace('price: "0.12"', 'price: "-0.12"')
            .replace("decimals: 4", "decimals: 9"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    res = run(["catalog", "validate", str(bad), "--json"])
    assert res.exit_code == 1
    doc = orjson.loads(res.output)
    paths = {p["path"] for p in doc["problems"]}
    assert doc["valid"] is False
    assert {"timezone", "tariffs.VOICE_STD.rounding.decimals",
            "tariffs.VOICE_STD.rates[1].steps[0].price"} <= paths


def test_validate_summarises_a_valid_catalog():
    res = run(["catalog", "validate", SAMPLE, "--json"])
    assert res.exit_code == 0
    doc = orjson.loads(res.output)
    assert doc["valid"] and doc["version"] == "2026-11-a" and doc["rates"] == 5
    assert doc["prefixes"] == 4 and len(doc["content_hash"]) == 64
    human = run(["catalog", "validate", SAMPLE])
    assert "valid" in human.output and "5 rates" in human.output


def test_validate_missing_file_exits_1(tmp_path):
    res = run(["catalog", "validate", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 1
    assert "cannot read" in res.output


def test_demo_rates_worked_examples_and_traffic():
    res = run(["demo", "--rating-only", "--requests", "3000", "--json"])
    assert res.exit_code == 0, res.output
    doc = orjson.loads(res.output.strip().splitlines()[-1])
    assert all(row["ok"] for row in doc["worked_examples"]), doc["worked_examples"]
    assert sum(doc["results"].values()) == 3000
    assert doc["revenue_total"] != "0.000000"


@pytest.mark.parametrize("args", [["--help"], ["rate", "--help"]])
def test_console_entry_point_runs(args):
    res = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0
    assert "Usage" in res.stdout


def test_the_cli_retention_defaults_are_the_stores():
    """``run`` and ``serve`` default to what the store keeps by default (the CLI writes the
    numbers out to stay light at start-up)."""
    from balances.store import DEFAULT_LEDGER_RETENTION_S, DEFAULT_RETENTION_S
    from flows.cli_common import IDEMPOTENCY_RETENTION_S, LEDGER_RETENTION_S

    assert (IDEMPOTENCY_RETENTION_S, LEDGER_RETENTION_S) == (DEFAULT_RETENTION_S,
                                                           DEFAULT_LEDGER_RETENTION_S)
