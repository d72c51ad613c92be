"""``chargeflow serve`` with the Diameter door as a subprocess: announced on the port it got,
charging a Gy session and an EVENT, and on SIGTERM a DPR to its peer and exit 0."""

from __future__ import annotations

import signal
import subprocess
from fractions import Fraction

from charging.money import MICROS
from tests.flows.conftest import REPO, cli_args, cli_env
from tests.gateway.diameter_rig import (
    ACCOUNTS,
    CATALOG,
    SMS,
    VOICE,
    GyClient,
    avp,
    ccr_avps,
    encode,
    mscc,
    units,
)


def test_serve_runs_the_diameter_door_and_drains_on_sigterm(cf_env):
    env = cf_env(ACCOUNTS, CATALOG)
    proc = subprocess.Popen(cli_args("serve", "--diameter", "127.0.0.1:0", "--no-nchf",
                                     "--no-api", "--origin-host", "ocs.serve.test",
                                     "--data-dir", str(env.data_dir)),
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("diameter listening on 127.0.0.1:"), (line, proc.poll())
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        c = GyClient(port)
        cea = c.cer()
        assert cea.result == 2001 and cea.first(264).value == b"ocs.serve.test"
        assert c.request(ccr_avps("serve;1", 1, 0, [mscc(VOICE, [])])).result == 2001
        assert c.request(ccr_avps("serve;1", 3, 1, [mscc(VOICE, None, units(seconds=45))])
                         ).result == 2001
        assert c.request(ccr_avps("serve;2", 4, 0, [mscc(SMS, units(events=1))], action=0)
                         ).result == 2001
        proc.send_signal(signal.SIGTERM)
        dpr = c.recv()
        assert dpr.header.is_request and dpr.header.command_code == 282
        c.send(encode(282, [avp(268, 2001), avp(264, b"pgw.test"), avp(296, b"test")],
                      flags=0, hbh=dpr.header.hop_by_hop_identifier, app=0))
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
        assert c.closed()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # voice without a called number: 'other', 45 s billed as 60 at 0.20/min; one SMS 0.09
    assert Fraction(env.balance_micros("alice"), MICROS) == Fraction("10.00") - \
        Fraction("0.20") - Fraction("0.09")


def test_gateway_reaches_engines_over_kafka_and_two_instances_share_a_session(cf_env):
    """``chargeflow gateway`` twice against an engine on the embedded broker and the shared
    Redis: a session opened on one instance goes on and ends on the other."""
    env = cf_env(ACCOUNTS, CATALOG)
    engine = env.start_engine("--commit-s", "0.2")
    gateways = []
    try:
        ports = []
        for name in ("gw-a", "gw-b"):
            proc = subprocess.Popen(cli_args(
                "gateway", "--diameter", "127.0.0.1:0", "--no-nchf", "--no-api",
                "--kafka", env.broker, "--redis", f"unix://{env.data_dir / 'redis.sock'}",
                "--instance", name, "--data-dir", str(env.data_dir)),
                cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, text=True)
            gateways.append(proc)
            line = proc.stdout.readline()
            assert line.startswith("diameter listening on "), (line, proc.poll())
            ports.append(int(line.rsplit(":", 1)[1]))
        a, b = GyClient(ports[0]), GyClient(ports[1], host="pgw2.test")
        assert a.cer().result == 2001 and b.cer().result == 2001
        i = a.request(ccr_avps("kafka;1", 1, 0, [mscc(VOICE, [])]))
        assert i.result == 2001 and i.services()[VOICE]["granted"] == 300
        u = b.request(ccr_avps("kafka;1", 2, 1, [mscc(VOICE, [], units(seconds=70))],
                               msisdn=None))
        assert u.result == 2001 and u.services()[VOICE]["granted"] == 300
        again = a.request(ccr_avps("kafka;1", 2, 1, [mscc(VOICE, [], units(seconds=70))],
                                   msisdn=None), flags=0x90)
        assert again.services() == u.services()  # a replay, wherever it lands
        assert b.request(ccr_avps("kafka;1", 3, 2, [], msisdn=None)).result == 2001
        for proc in gateways:
            proc.send_signal(signal.SIGTERM)
        for proc in gateways:
            assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    finally:
        for proc in gateways:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        engine.kill()
    # 70 s at 'other' (0.20 per started minute): 0.40, charged once
    assert Fraction(env.balance_micros("alice"), MICROS) == Fraction("9.60")
