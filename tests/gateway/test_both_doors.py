"""Both front doors of one ``chargeflow serve`` charging the same account at the same time: a
PGW's Gy sessions and events over Diameter and an SMF's Nchf sessions over HTTP/2, against
the one in-process engine. Afterwards the balance is the opening balance less exactly what
was rated, the ledger sums to it, the archive's outbox holds every charge once, and the
metrics endpoint counted both doors and the engine."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from fractions import Fraction

import httpx

from billing.outbox import decode_entry
from charging.money import MICROS
from tests.flows.conftest import REPO, cli_args, cli_env
from tests.gateway.diameter_rig import (
    ACCOUNTS,
    CATALOG,
    SMS,
    VOICE,
    GyClient,
    ccr_avps,
    mscc,
    units,
)
from tests.gateway.nchf_rig import ROOT, request, usage

GY_EVENTS = 20  # SMS by direct debit, 0.09 each
NCHF_SESSIONS = 10  # each: create, one SMS reserved, released as used (0.09)
ALICE_IMSI = "262010000000001"  # alice's, as the Diameter rig provisions her


def _announced(proc: subprocess.Popen, names: set[str]) -> dict[str, int]:
    """The ports serve announced for ``names`` (one line each, in any order)."""
    ports: dict[str, int] = {}
    while set(ports) != names:
        line = proc.stdout.readline()
        m = re.fullmatch(r"(\w+) listening on 127\.0\.0\.1:(\d+)\n", line)
        assert m, (line, proc.poll(), proc.stderr.read()[-3000:] if proc.poll() else "")
        ports[m.group(1)] = int(m.group(2))
    return ports


def _gy(port: int, errors: list) -> None:
    try:
        c = GyClient(port)
        assert c.cer().result == 2001
        for n in range(GY_EVENTS):
            a = c.request(ccr_avps(f"both;ev{n}", 4, 0, [mscc(SMS, units(events=1))],
                                   action=0))
            assert a.result == 2001, a.result
        assert c.request(ccr_avps("both;voice", 1, 0, [mscc(VOICE, [])])).result == 2001
        assert c.request(ccr_avps("both;voice", 3, 1, [mscc(VOICE, None, units(seconds=45))])
                         ).result == 2001
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)


def _nchf(port: int, errors: list) -> None:
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(http1=False, http2=True, timeout=30) as h2:
            for n in range(NCHF_SESSIONS):
                create = request(imsi=ALICE_IMSI)  # another PDU session each time: a create
                create["pDUSessionChargingInformation"]["chargingId"] = n + 1  # of the same
                r = h2.post(url + ROOT, json=create)  # body would be its retransmission
                assert r.status_code == 201, r.text
                ref = r.headers["location"].rsplit("/", 1)[-1]
                r = h2.post(f"{url}{ROOT}/{ref}/update", json=request(1, units=[
                    usage(SMS, requested={"serviceSpecificUnits": 1})]))
                assert r.json()["multipleUnitInformation"][0]["resultCode"] == "SUCCESS", r.text
                r = h2.post(f"{url}{ROOT}/{ref}/release", json=request(2, units=[
                    usage(SMS, serviceSpecificUnits=1)]))
                assert r.status_code == 204, r.text
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_both_doors_charge_one_account_and_it_reconciles(cf_env):
    env = cf_env(ACCOUNTS, CATALOG)
    opening = env.balance_micros("alice")
    proc = subprocess.Popen(cli_args("serve", "--diameter", "127.0.0.1:0", "--nchf",
                                     "127.0.0.1:0", "--no-api", "--metrics", "127.0.0.1:0",
                                     "--data-dir", str(env.data_dir)),
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        ports = _announced(proc, {"diameter", "nchf", "metrics"})
        errors: list = []
        threads = [threading.Thread(target=_gy, args=(ports["diameter"], errors)),
                   threading.Thread(target=_nchf, args=(ports["nchf"], errors))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        text = httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # each door counted its own traffic; the engine decided it all (CCR-I and -T of the
    # voice session and every SMS; the Nchf door's creates carry no units)
    assert _metric(text, "chargeflow_diameter_answers_total", command="CCR-E",
                   result_code="2001") == GY_EVENTS
    assert _metric(text, "chargeflow_nchf_requests_total", op="release") == \
        NCHF_SESSIONS
    assert _metric(text, "chargeflow_decisions_total") >= GY_EVENTS + 2 + 2 * NCHF_SESSIONS

    # 45 s of voice to no called number: 'other', one started minute at 0.20; 30 SMS at 0.09
    expected = Fraction("0.20") + (GY_EVENTS + NCHF_SESSIONS) * Fraction("0.09")
    balance = env.balance_micros("alice")
    assert Fraction(opening - balance, MICROS) == expected
    assert env.ledger_sum("alice") == balance
    charges = []
    client = env.client
    for key in client.scan_iter(match="cf:outbox:{*}"):
        for sid, fields in client.xrange(key):
            entry = decode_entry(sid, fields)
            charges += [row for kind, row in entry.records
                        if kind == "charge" and row["account"] == "alice"]
    assert len({c["id"] for c in charges}) == len(charges) == GY_EVENTS + 1 + NCHF_SESSIONS
    assert Fraction(sum(c["cost"] for c in charges), MICROS) == expected
