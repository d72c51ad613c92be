"""The CLI around the embedded services and the JSONL run: stale pid files, awkward data
directories, a busy metrics port, a closed stdin, and SIGINT/SIGTERM draining a run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import orjson
import pytest

from tests.flows.conftest import REPO, SAMPLE_PATH, accounts_of, cli_args, cli_env, jsonl

TUE = "2026-11-24T10:00:00+01:00"


def request(rid: str, account: str = "acct00000") -> bytes:
    return orjson.dumps({"id": rid, "kind": "event", "account": account, "service": "sms",
                         "ts": TUE, "used": 1}) + b"\n"


def redis_servers_of(path: str) -> list[int]:
    """redis-server processes whose command line names a socket under ``path`` (Redis shows
    at most the first ~100 characters of it)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "redis-server" in cmd and path[:60] in cmd:
            found.append(int(pid))
    return found


def test_stop_leaves_alone_a_process_that_reused_a_stale_broker_pid(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    victim = subprocess.Popen(["sleep", "60"])  # holds the pid a crashed broker left behind
    try:
        (data / "broker.pid").write_text(str(victim.pid))
        (data / "broker.addr").write_text("127.0.0.1:1")
        res = subprocess.run(cli_args("stop", "--data-dir", str(data)), env=cli_env(),
                             cwd=REPO, capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        time.sleep(0.3)
        assert victim.poll() is None, "chargeflow stop signalled a process that is not tansu"
        assert not (data / "broker.pid").exists() and not (data / "broker.addr").exists()
    finally:
        victim.kill()
        victim.wait()


def test_a_data_dir_too_long_for_a_unix_socket_is_refused_at_once(tmp_path):
    data = tmp_path / ("d" * max(1, 110 - len(str(tmp_path))))
    t0 = time.monotonic()
    res = subprocess.run(cli_args("balance", "nobody", "--data-dir", str(data)),
                         env=cli_env(), cwd=REPO, capture_output=True, timeout=60)
    # wrong input: exit 1 (CONTRACT §5), and nothing created (it was exit 2, after mkdir)
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    assert b"too long for the embedded Redis's unix socket" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 8  # no wait for a server that could never answer
    assert redis_servers_of(str(tmp_path)) == []  # and none left running
    assert not data.exists()
    demo = subprocess.run(cli_args("demo", "--duration", "1", "--data-dir", str(data)),
                          env=cli_env(), cwd=REPO, capture_output=True, timeout=60)
    assert demo.returncode == 1 and b"too long" in demo.stderr and not data.exists()


@pytest.mark.parametrize("name", ["ha#sh", "q?x", "pc%41t"])
def test_data_dirs_with_url_characters_work(cf_env, tmp_path, name):
    env = cf_env(accounts_of(1, "1.00"), name=name)  # was: exit 2, "cannot reach Redis"
    out = tmp_path / "out"
    env.cli_ok("run", "--input", "-", "--output", str(out), stdin=request("r1"))
    assert [d["result"] for d in jsonl(out / "decisions.jsonl")] == ["SUCCESS"]


def test_a_busy_metrics_port_is_a_clear_error(cf_env, tmp_path):
    env = cf_env(accounts_of(1, "1.00"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = env.cli("run", "--input", "-", "--output", str(tmp_path / "out"),
                      "--metrics-port", str(port), stdin=request("r1"))
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}".encode() in res.stderr, res.stderr


def test_a_closed_stdin_is_a_clear_error(cf_env, tmp_path):
    env = cf_env(accounts_of(1, "1.00"))
    res = subprocess.run(
        cli_args("run", "--input", "-", "--output", str(tmp_path / "out"), "--data-dir",
                 str(env.data_dir)),
        env=cli_env(), cwd=REPO, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.close(0))
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    assert b"standard input is closed" in res.stderr, res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_drains_a_jsonl_run_from_an_open_pipe(cf_env, tmp_path, sig):
    """README: SIGTERM/SIGINT drain and stop `chargeflow run`. The lines read are decided and
    written and the run exits 0 (SIGINT was "Aborted!", exit 1; SIGTERM killed it)."""
    env = cf_env(accounts_of(1, "1.00"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        cli_args("run", "--input", "-", "--output", str(out), "--data-dir", str(env.data_dir)),
        env=cli_env(), cwd=REPO, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(request("r1") + request("r2"))
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(jsonl(out / "decisions.jsonl")
                                                   if (out / "decisions.jsonl").exists()
                                                   else []) < 2:
            time.sleep(0.05)
        proc.send_signal(sig)  # the pipe stays open: only the signal can end the run
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.stderr.close()
    assert [d["id"] for d in jsonl(out / "decisions.jsonl")] == ["r1", "r2"]
    assert env.balance_micros("acct00000") == 1_000_000 - 2 * 90_000  # two SMS at 0.09


def test_a_kafka_consumer_event_is_neither_a_request_nor_an_offset():
    """An error event of the consumer (a broker gone: offset -1001) was read as an empty
    request — a bogus reject — and its offset became the position (-1000: Kafka's "stored
    offset", from which a resumed engine without one would start at the end and skip
    requests). Consumer events cannot be made on demand with a real broker, so this stands
    in for the consumer: two messages as confluent-kafka hands them over."""
    from confluent_kafka import KafkaError

    from flows.kafka_io import Consumed, _GroupPartition, _Worker

    class Message:
        def __init__(self, value, offset, error=None):
            self.value, self.offset = (lambda: value), (lambda: offset)
            self.error = lambda: error
            self.partition = lambda: 0

    class Consumer:
        def consume(self, n, timeout):
            return [Message(b'{"id":"a"}', 5),
                    Message(None, -1001, KafkaError(KafkaError._TRANSPORT))]

    part = _GroupPartition(_Worker(Consumer(), "requests"), None, 10, threading.Event())
    batch = part.next_batch()
    assert [x for x in batch if type(x) is not Consumed] == [b'{"id":"a"}']
    assert [(x.partition, x.offset) for x in batch if type(x) is Consumed] == [(0, 6)]


def test_a_line_longer_than_a_read_is_joined_whole(cf_env, tmp_path):
    """A 2.5 MB line comes in three 1 MiB reads; it is rejected as TOO_LARGE with its exact
    size, and the lines around it are decided (the pieces are joined once, at its end)."""
    env = cf_env(accounts_of(1, "1.00"))
    huge = b'{"id":"big","pad":"' + b"x" * 2_500_000 + b'"}'
    out = tmp_path / "out"
    env.cli_ok("run", "--input", "-", "--output", str(out),
               stdin=request("r1") + huge + b"\n" + request("r2") + huge)  # last: no newline
    assert [d["id"] for d in jsonl(out / "decisions.jsonl")] == ["r1", "r2"]
    rejects = jsonl(out / "rejects.jsonl")
    assert [(r["error"], r["raw_truncated_from"]) for r in rejects] == \
        [("TOO_LARGE", len(huge)), ("TOO_LARGE", len(huge))]


def test_a_malformed_redis_url_is_bad_input(tmp_path):
    res = subprocess.run(cli_args("balance", "alice", "--redis", "foo://x", "--data-dir",
                                  str(tmp_path / "data")),
                         env=cli_env(), cwd=REPO, capture_output=True, timeout=60)
    assert res.returncode == 1 and b"Traceback" not in res.stderr  # was 2, "cannot reach"
    assert b"is not a Redis URL" in res.stderr, res.stderr


NO_REDIS = ("error: no embedded Redis in {}: nothing was loaded there (nothing was started "
            "either); pass the --data-dir of an earlier `chargeflow catalog load`, or "
            "--redis URL")


@pytest.fixture
def stopped(tmp_path):
    """Data dirs a test names, stopped at its end whatever it found (a server started there
    is the failure the tests below look for, and must not outlive them)."""
    dirs: list = []
    yield dirs
    for d in dirs:
        if (d / "redis.pid").exists():
            subprocess.run(cli_args("stop", "--data-dir", str(d)), env=cli_env(), cwd=REPO,
                           capture_output=True, timeout=60)


@pytest.mark.parametrize("args", [["balance", "alice"], ["topup", "alice", "1.00"],
                                  ["topup", "alice", "1.00", "--id", "p1"], ["sweep"]])
def test_commands_on_existing_data_start_no_redis_where_nothing_was_loaded(tmp_path, stopped,
                                                                           args):
    # run in a directory with no .chargeflow: on 1d4aa33 an empty redis-server was started
    # there and `balance` said "no account 'alice'" (exit 1), `sweep` "0 released" (exit 0)
    work = tmp_path / "elsewhere"
    work.mkdir()
    left = tmp_path / "left"  # one an earlier release started an empty server in
    left.mkdir()
    (left / "appendonly.aof").write_bytes(b"")
    stopped += [work / ".chargeflow", left]
    env = {**cli_env(), "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    res = subprocess.run(cli_args(*args), env=env, cwd=work, capture_output=True, timeout=60)
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    assert res.stderr.decode().strip() == NO_REDIS.format(work / ".chargeflow")
    assert not (work / ".chargeflow").exists() and redis_servers_of(str(work)) == []

    res = subprocess.run(cli_args(*args, "--data-dir", str(left)), env=cli_env(), cwd=REPO,
                         capture_output=True, timeout=60)
    assert res.returncode == 1 and res.stderr.decode().strip() == NO_REDIS.format(left)
    assert redis_servers_of(str(left)) == []


@pytest.mark.parametrize("command", [["catalog", "load", "CATALOG"],
                                     ["accounts", "load", "ACCOUNTS"],
                                     ["run", "--input", "-", "--output", "OUT"]])
def test_a_data_dir_that_cannot_be_created_is_a_clear_error(tmp_path, command):
    # a traceback on 1d4aa33 (FileNotFoundError from mkdir)
    files = {"CATALOG": str(SAMPLE_PATH), "OUT": str(tmp_path / "out"),
             "ACCOUNTS": str(tmp_path / "a.jsonl")}
    (tmp_path / "a.jsonl").write_text('{"id": "a", "plan": "PREPAID_S", "balance": "1.00"}\n')
    res = subprocess.run(cli_args(*[files.get(a, a) for a in command], "--data-dir",
                                  "/proc/nope"),
                         env=cli_env(), cwd=REPO, capture_output=True, timeout=60, input=b"")
    assert res.returncode == 1 and b"Traceback" not in res.stderr, res.stderr
    assert res.stderr.decode().strip() == (
        "error: cannot use /proc/nope as the data directory of the embedded Redis: No such "
        "file or directory; pass a --data-dir you can write, or --redis URL")
    balance = subprocess.run(cli_args("balance", "alice", "--data-dir", "/proc/nope"),
                             env=cli_env(), cwd=REPO, capture_output=True, timeout=60)
    assert balance.returncode == 1
    assert balance.stderr.decode().strip() == NO_REDIS.format("/proc/nope")


def test_an_unreachable_redis_cluster_url_exits_2_with_the_reason():
    # a traceback and exit 1 on 1d4aa33 (RedisClusterException is no RedisError)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"redis+cluster://:S3cret@127.0.0.1:{port}"
    for args in (["balance", "alice"], ["topup", "alice", "1.00"], ["sweep"]):
        res = subprocess.run(cli_args(*args, "--redis", url), env=cli_env(), cwd=REPO,
                             capture_output=True, timeout=60)
        assert res.returncode == 2 and b"Traceback" not in res.stderr, (args, res.stderr)
        assert res.stderr.startswith(
            f"error: cannot reach Redis at redis+cluster://:***@127.0.0.1:{port}: Redis "
            "Cluster cannot be connected".encode()), res.stderr
        assert b"S3cret" not in res.stderr
