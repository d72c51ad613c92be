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
