"""Silent sessions are released with no traffic at all (CONTRACT §3.1: after 2 × validity
with no report "the reservation is released by the engine"). The sweep used to run only
between batches of requests, so an idle engine kept a silent session's money reserved
until some other request came. Both engine modes, on the embedded Redis; the Kafka one on
the embedded broker."""

from __future__ import annotations

import subprocess
import time

import orjson

from tests.flows.conftest import REPO, SAMPLE_TEXT, accounts_of, cli_args, cli_env, wait_for

SHORT = SAMPLE_TEXT.replace("validity_s: 600", "validity_s: 1")  # released 2 s after silence


def _initial(rid: str, account: str) -> dict:
    return {"id": rid, "kind": "initial", "account": account, "service": "voice",
            "session": f"{rid}-s", "seq": 0, "destination": "4917612345",
            "ts": int(time.time() * 1000)}


def _released(env, account: str) -> bool:
    view = env.store.view(account)
    return view.reserved == 0 and view.sessions == {}


def test_kafka_engine_releases_a_silent_session_with_no_traffic(cf_env):
    assert SHORT != SAMPLE_TEXT
    env = cf_env(accounts_of(2), catalog_text=SHORT)
    engine = env.start_engine("--sweep-s", "0.5")
    decisions = env.reader("decisions")
    env.kafka.send([_initial("i1", "acct00000")])
    env.kafka.flush()
    wait_for(lambda: "i1" in decisions.by_id, 60, "the initial's decision", [decisions], engine)
    assert decisions.by_id["i1"][0]["result"] == "SUCCESS"
    assert env.store.view("acct00000").reserved > 0
    # nothing more is sent: the engine alone must release it, ~2 s after the initial
    wait_for(lambda: _released(env, "acct00000"), 30, "the silent session's release",
             engine=engine)
    assert [e["reason"] for e in env.store.ledger("acct00000")][-1] == "release"


def test_jsonl_engine_releases_a_silent_session_while_its_input_is_quiet(cf_env):
    env = cf_env(accounts_of(2), catalog_text=SHORT)
    out = env.root / "out"
    proc = subprocess.Popen(cli_args("run", "--data-dir", str(env.data_dir), "--input", "-",
                                     "--output", str(out), "--sweep-s", "0.5"),
                            cwd=REPO, env=cli_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(orjson.dumps(_initial("j1", "acct00001")) + b"\n")
        proc.stdin.flush()  # and the pipe stays open, with nothing more on it
        decisions = out / "decisions.jsonl"
        wait_for(lambda: decisions.exists() and b"j1" in decisions.read_bytes(), 60,
                 "the initial's decision")
        assert orjson.loads(decisions.read_bytes().splitlines()[0])["result"] == "SUCCESS"
        wait_for(lambda: _released(env, "acct00001"), 30, "the silent session's release")
        assert proc.poll() is None  # released while the input was still open
        assert [e["reason"] for e in env.store.ledger("acct00001")][-1] == "release"
    finally:
        proc.stdin.close()
        proc.wait(60)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
