"""``chargeflow serve`` without ``--kafka`` (its engine in its own process, no topic written)
and ``chargeflow notify --source outbox`` on the same data dir: an Nchf update that takes
nina below a threshold and one that gives dora her final grant (a reservation: no money
moves) each emit one event, delivered signed; the same requests again emit nothing."""

from __future__ import annotations

import re
import signal
import subprocess

import httpx

from tests.flows.conftest import REPO, cf_env, cli_args, cli_env  # noqa: F401 - a fixture
from tests.gateway.nchf_rig import ACCOUNTS, CATALOG, ROOT, request, usage
from tests.notifications.conftest import SECRET, read_topic, wait_for


def test_serve_without_kafka_notifies_from_the_outbox(cf_env, receiver, tmp_path):  # noqa: F811
    env = cf_env(ACCOUNTS, CATALOG)
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""
rules:
  - {{id: low, account: nina, below: "99.95"}}
  - {{id: last, account: dora, final: true}}
webhooks:
  - {{name: crm, url: "{receiver.url}/hook", secret: "{SECRET.decode()}"}}
delivery: {{tries: 5, backoff_s: 0.05, max_backoff_s: 0.2, timeout_s: 2}}
""")
    procs: list[tuple[subprocess.Popen, str]] = []

    def spawn(name: str, *args: str, **kw) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen(cli_args(*args, "--data-dir", str(env.data_dir)),
                                    cwd=REPO, env=cli_env(), stdin=subprocess.DEVNULL,
                                    stderr=f, **kw)
        procs.append((proc, str(log)))
        return proc

    try:
        serve = spawn("serve", "serve", "--no-diameter", "--no-api", "--nchf",
                      "127.0.0.1:0", stdout=subprocess.PIPE)
        line = serve.stdout.readline().decode()
        m = re.fullmatch(r"nchf listening on 127\.0\.0\.1:(\d+)\n", line)
        assert m, (line, open(procs[0][1]).read()[-2000:])
        url = f"http://127.0.0.1:{m.group(1)}{ROOT}"
        notify = spawn("notify", "notify", "--rules", str(rules), "--source", "outbox",
                       stdout=subprocess.DEVNULL)
        offsets = "cf:notify:offsets:chargeflow-notify"
        wait_for(lambda: env.client.hget(offsets, "outbox") is not None,
                 "the notifier's first position", timeout_s=60)

        with httpx.Client(http1=False, http2=True, timeout=30) as h2:
            def post(path: str, body: dict) -> httpx.Response:
                r = h2.post(url + path, json=body)
                assert r.status_code in (200, 201), r.text
                return r

            nina = post("", request(imsi="001010000000001")).headers["location"]
            nina = "/" + nina.rsplit("/", 1)[-1]
            dora = post("", request(imsi="001010000000003")).headers["location"]
            dora = "/" + dora.rsplit("/", 1)[-1]
            sms = request(1, units=[usage(30, requested={"serviceSpecificUnits": 1},
                                          serviceSpecificUnits=1)])  # 0.09: 99.91
            voice = request(1, units=[usage(100, requested={"time": 300})])  # 60 s, final
            first = [post(f"{nina}/update", sms).json(), post(f"{dora}/update", voice).json()]
            assert first[1]["multipleUnitInformation"][0]["finalUnitIndication"]
            assert env.balance_micros("nina") == 99_910_000

            def events() -> list[dict]:
                return read_topic(env.broker, "chargeflow.notifications")

            wait_for(lambda: len(receiver.delivered("/hook")) == 2, "two deliveries",
                     timeout_s=60)
            # the same requests again (the SMF retransmits): the same answers, no event
            assert [post(f"{nina}/update", sms).json(),
                    post(f"{dora}/update", voice).json()] == first
        env.cli_ok("topup", "nina", "0.01")  # 99.92, still below: a mark in the outbox
        last = env.client.xrevrange("cf:outbox:{all}", count=1)[0][0]
        wait_for(lambda: env.client.hget(offsets, "outbox") == last,
                 "the notifier to read past the repeats")
        low, final = sorted(events(), key=lambda e: e["type"], reverse=True)
        assert (low["type"], low["account"], low["threshold"], low["value"]) == (
            "low_balance", "nina", "99.95", "99.91")
        assert (final["type"], final["account"], final["value"], final["balance"]) == (
            "final_grant", "dora", 60, "0.30")
        assert sorted(e["id"] for e in receiver.delivered("/hook")) == \
            sorted(e["id"] for e in (low, final))
        assert receiver.refused == 0
        notify.send_signal(signal.SIGTERM)
        assert notify.wait(30) == 0, open(procs[1][1]).read()[-2000:]
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0, open(procs[0][1]).read()[-2000:]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
