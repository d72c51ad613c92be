"""The Diameter door against an independent Gy client: Erlang/OTP's diameter application
(tests/gateway/erlang/gy_client.escript, with an RFC 4006 dictionary compiled by diameterc
at test time), over TCP, with a real Redis and an in-process engine.

The client drives CER, CCR-I/U/T of two rating groups, a CCR-U and a CCR-T sent again with
the T flag, EVENTs by IMSI (one sent again), an unknown subscriber, a subscriber who runs
dry (a last grant with FUI, then 4012), DWR/DWA through its watchdog and DPR/DPA. The
answers and the final balances are compared with what the reference rater
(``charging.reference``) says the catalog gives."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from balances.store import BalanceStore
from charging.money import MICROS
from charging.reference import max_grant, rate_units, select_rate
from tests.gateway.diameter_rig import TUE_PEAK_S, GyServer, prepare

HERE = Path(__file__).parent / "erlang"


def _missing() -> str | None:
    for tool in ("escript", "erlc", "diameterc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Erlang/OTP with its diameter application)"
    probe = subprocess.run(["erl", "-noshell", "-eval",
                            "io:format(\"~p\", [code:which(diameter)]), halt()."],
                           capture_output=True, text=True, timeout=60)
    if "non_existing" in probe.stdout or probe.returncode != 0:
        return "Erlang's diameter application is not installed (erlang-diameter)"
    return None


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory) -> Path:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("gy-dict")
    subprocess.run(["diameterc", "-o", str(out), str(HERE / "gy_rfc4006.dia")], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(["erlc", "-o", str(out), str(out / "gy_rfc4006.erl")], check=True,
                   capture_output=True, timeout=120)
    assert (out / "gy_rfc4006.beam").exists()
    return out


def _parse(stdout: str) -> dict[str, tuple[int, dict]]:
    """label -> (command Result-Code, {rating group: (code, granted, validity, fui)})"""
    out = {}
    for line in stdout.splitlines():
        label, *rest = line.split()
        if not rest or not rest[0].isdigit():
            out[line] = (0, {})
            continue
        services = {}
        for item in rest[1:]:
            rg, code, granted, validity, fui = item.split(":")
            services[int(rg)] = (int(code), None if granted == "-" else int(granted),
                                 None if validity == "-" else int(validity), fui == "1")
        out[label] = (int(rest[0]), services)
    return out


def test_an_erlang_gy_client_is_charged_as_the_catalog_says(dictionary, redis_client, prefix):
    catalog = prepare(redis_client, prefix)
    server = GyServer(redis_client, prefix).start()
    try:
        run = subprocess.run(["escript", str(HERE / "gy_client.escript"), str(dictionary),
                              "127.0.0.1", str(server.port), "pgw.erl.test"],
                             capture_output=True, text=True, timeout=60)
        dwr = server.metric("chargeflow_diameter_requests_total", command="DWR")
        dpr = server.metric("chargeflow_diameter_requests_total", command="DPR")
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    got = _parse(run.stdout)

    # what the catalog gives: voice without a called number at the 'other' rate
    voice = catalog.tariffs["VOICE_STD"]
    rate = select_rate(catalog, voice, TUE_PEAK_S * 1000, None)
    sms = catalog.tariffs["SMS_STD"]
    sms_rate = select_rate(catalog, sms, TUE_PEAK_S * 1000, None)
    data_quota = catalog.tariffs["DATA_STD"].quota
    grant, _ = max_grant(voice, rate, 0, 0, voice.quota, Fraction(10))
    full = (2001, grant, voice.validity_s, grant < voice.quota)
    assert got["I"] == (2001, {100: full, 200: (2001, data_quota, 600, False)})
    grant_u, _ = max_grant(voice, rate, 61, 0, voice.quota,
                           Fraction(10) - rate_units(voice, rate, 61)[0])
    assert got["U1"] == (2001, {100: (2001, grant_u, 600, False),
                                200: (2001, data_quota, 600, False)})
    assert got["U1-again"] == got["U1"]  # the T flag: the same answer, nothing charged twice
    assert got["T"] == (2001, {100: (2001, None, None, False)})
    assert got["T-again"] == got["T"]
    assert got["E"] == (2001, {300: (2001, 2, None, False)})
    assert got["E-again"] == got["E"]
    assert got["unknown"] == (5030, {})

    carol_grant, _ = max_grant(voice, rate, 0, 0, voice.quota, Fraction("0.50"))
    assert 0 < carol_grant < voice.quota
    assert got["C-I"] == (2001, {100: (2001, carol_grant, 600, True)})  # FUI TERMINATE
    left = Fraction("0.50") - rate_units(voice, rate, 120)[0]
    assert max_grant(voice, rate, 120, 0, voice.quota, left)[0] == 0
    assert got["C-U"] == (2001, {100: (4012, None, None, False)})
    assert got["C-T"] == (2001, {100: (2001, None, None, False)})

    assert "watchdog okay" in got and dwr >= 1
    assert got["E-after-watchdog"] == (2001, {300: (2001, 1, None, False)})
    assert "disconnected" in got and dpr == 1

    store = BalanceStore(redis_client, prefix=prefix)
    alice = Fraction(10) - rate_units(voice, rate, 61 + 30)[0] - rate_units(sms, sms_rate, 2)[0]
    expected = {"alice": alice, "carol": left,
                "dave": Fraction(3) - rate_units(sms, sms_rate, 1)[0]}
    for account, balance in expected.items():
        view = store.view(account)
        assert Fraction(view.balance, MICROS) == balance, account
        assert view.reserved == 0 and not view.sessions, account  # every session ended
    alice_data = sum(b.units for b in store.view("alice").allowances["data"])
    assert alice_data == 1073741824 - 5000  # the data came from the allowance
