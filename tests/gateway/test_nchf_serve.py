"""``chargeflow serve`` opens the Nchf door (CONTRACT §6.1): it says where it listens, an
SMF's create / update / release over HTTP/2 charges the account, SIGTERM drains and exits
0. The embedded Redis of a private data dir, the in-process engine."""

from __future__ import annotations

import re
import signal
import subprocess

import httpx

from tests.conftest import micros
from tests.flows.conftest import REPO, cli_args, cli_env
from tests.gateway.nchf_rig import ACCOUNTS, CATALOG, ROOT, request, usage


def test_serve_opens_the_nchf_door(cf_env):
    env = cf_env(ACCOUNTS, CATALOG)
    proc = subprocess.Popen(cli_args("serve", "--no-diameter", "--no-api", "--nchf",
                                     "127.0.0.1:0", "--data-dir", str(env.data_dir)),
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline().decode()
        m = re.fullmatch(r"nchf listening on 127\.0\.0\.1:(\d+)\n", line)
        assert m, (line, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "")
        url = f"http://127.0.0.1:{m.group(1)}"
        with httpx.Client(http1=False, http2=True, timeout=30) as h2:
            r = h2.post(url + ROOT, json=request(imsi="001010000000001"))
            assert r.status_code == 201, r.text
            ref = r.headers["location"].rsplit("/", 1)[-1]
            r = h2.post(f"{url}{ROOT}/{ref}/update", json=request(units=[
                usage(30, requested={"serviceSpecificUnits": 1})]))
            assert r.json()["multipleUnitInformation"][0]["resultCode"] == "SUCCESS"
            r = h2.post(f"{url}{ROOT}/{ref}/release", json=request(units=[
                usage(30, serviceSpecificUnits=1)]))
            assert r.status_code == 204
        assert env.balance_micros("nina") == micros("100.00") - micros("0.09")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        err = proc.stderr.read().decode()
    assert code == 0, err[-2000:]
    assert "draining nchf" in err
