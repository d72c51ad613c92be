"""The Diameter door over TCP with a real Redis and an in-process engine: malformed input
(answered, or its connection closed while the others are served), the peer rules, the
subscriber and session rules of CONTRACT §6.2/§6.3, sessions moving between gateway
instances, the answer timeout, back-pressure and the DPR on close."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from fractions import Fraction

import pytest

from balances.store import BalanceStore
from charging.money import MICROS
from flows.runtime import EngineConfig, make_engine
from gateway.diameter import wire
from tests.conftest import REDIS_URL
from tests.gateway.diameter_rig import (
    DATA,
    NO_SERVICE,
    SMS,
    VOICE,
    GyClient,
    GyServer,
    avp,
    ccr_avps,
    encode,
    mscc,
    prepare,
    units,
)


@pytest.fixture
def server(redis_client, prefix):
    prepare(redis_client, prefix)
    s = GyServer(redis_client, prefix, peers=frozenset({"pgw.test", "pgw2.test"})).start()
    yield s
    s.stop()


@pytest.fixture
def client(server):
    c = GyClient(server.port)
    assert c.cer().result == 2001
    yield c
    c.close()


def balance(redis_client, prefix, account: str) -> Fraction:
    return Fraction(BalanceStore(redis_client, prefix=prefix).view(account).balance, MICROS)


def dwr(c: GyClient) -> int:
    return c.request([avp(264, c.host.encode()), avp(296, b"test")], command=280, app=0).result


# -- bytes that are not Diameter, malformed messages ---------------------------------------

GOOD_CCR = encode(272, ccr_avps("junk;1", 4, 0, [mscc(SMS, units(events=1))], action=0))


@pytest.mark.parametrize("junk", [
    b"\x02" + GOOD_CCR[1:],                        # version 2
    b"\x01\x00\x00\x13" + bytes(16),               # length 19
    b"\x01\x00\x00\x22" + bytes(30),               # length not a multiple of 4
    b"\x01\xff\xff\xfc" + bytes(60),               # longer than any charging message
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x07" + random.Random(7).randbytes(63),
], ids=["version", "short", "unaligned", "huge", "http", "random"])
def test_bytes_that_are_not_diameter_close_only_their_connection(server, client, junk):
    other = GyClient(server.port, host="pgw2.test")
    assert other.cer().result == 2001
    other.send(junk)
    assert other.closed()
    assert dwr(client) == 2001  # the first connection is served on
    assert server.metric("chargeflow_diameter_connections_closed_total",
                         reason="not diameter") == 1


def test_a_truncated_message_and_a_vanished_peer_harm_no_one(server, client):
    other = GyClient(server.port, host="pgw2.test")
    assert other.cer().result == 2001
    other.send(GOOD_CCR[: len(GOOD_CCR) // 2])
    other.close()
    assert client.request(ccr_avps("t;1", 4, 0, [mscc(SMS, units(events=1))], action=0)
                          ).result == 2001


def test_malformed_ccrs_get_their_answers_on_a_connection_that_stays(client):
    unknown = client.request(ccr_avps("m;1", 1, 0, [mscc(VOICE, [])]) +
                             [wire.Avp(4242, 0, bytes(4), 0x40)])
    assert unknown.result == 5001 and unknown.failed[0].code == 4242
    assert unknown.first(263).value == "m;1" and unknown.first(415).value == 0
    answer_only = client.request(ccr_avps("m;1b", 1, 0, [mscc(VOICE, [])]) + [avp(448, 60)])
    assert answer_only.result == 5008 and answer_only.failed[0].code == 448
    missing = client.request([a for a in ccr_avps("m;2", 1, 0, []) if a.code != 415])
    assert missing.result == 5005 and missing.failed[0].code == 415
    assert not missing.header.is_error
    data = encode(272, ccr_avps("m;3", 1, 0, [])) + struct.pack("!II", 7777, (0x40 << 24) | 2)
    data = data[:1] + len(data).to_bytes(3, "big") + data[4:]
    client.send(data)
    assert client.recv().result == 5014
    wrong_app = client.request(ccr_avps("m;4", 1, 0, []), app=16777238)
    assert wrong_app.result == 3007 and wrong_app.header.is_error
    assert client.request([avp(264, b"pgw.test")], command=999).result == 3001
    assert client.request(ccr_avps("m;5", 1, 0, []), flags=0xA0).result == 3008
    assert client.request(ccr_avps("m;6", 1, 0, [mscc(VOICE, [])])).result == 2001


def test_peers_the_door_does_not_know_or_that_skip_the_cer_are_closed(server):
    stranger = GyClient(server.port, host="intruder.test")
    cea = stranger.cer()
    assert cea.result == 3010 and cea.header.is_error and stranger.closed()
    rude = GyClient(server.port)
    rude.send(GOOD_CCR)
    assert rude.closed()


# -- subscribers and services ----------------------------------------------------------------

def test_subscriber_and_service_rules(client, redis_client, prefix):
    unknown = client.request(ccr_avps("u;1", 1, 0, [mscc(VOICE, [])], msisdn="491799999999"))
    assert unknown.result == 5030 and unknown.services() == {}
    blocked = client.request(ccr_avps("u;2", 1, 0, [mscc(VOICE, [])], msisdn="491700000002"))
    assert blocked.result == 4010 and blocked.services() == {}
    both = client.request(ccr_avps("u;3", 1, 0, [mscc(VOICE, []), mscc(SMS, [])],
                                   msisdn="491700000005"))
    assert both.result == 2001
    assert {rg: s["result"] for rg, s in both.services().items()} == {VOICE: 2001, SMS: 4010}
    sms_only = client.request(ccr_avps("u;4", 1, 0, [mscc(SMS, [])], msisdn="491700000005"))
    assert sms_only.result == 4010 and sms_only.services()[SMS]["result"] == 4010
    no_rg = client.request(ccr_avps("u;5", 1, 0, [mscc(NO_SERVICE, []), mscc(None, [])]))
    assert no_rg.result == 5031
    assert no_rg.services()[NO_SERVICE]["result"] == 5031
    nameless = client.request(ccr_avps("u;6", 1, 0, [mscc(VOICE, [])], msisdn=None))
    assert nameless.result == 5005 and nameless.failed[0].code == 443
    by_nai = ccr_avps("u;7", 4, 0, [mscc(SMS, [])], msisdn=None, action=0) + [
        avp(443, [avp(450, 3), avp(444, "dave")])]
    before = balance(redis_client, prefix, "dave")
    event = client.request(by_nai)  # an empty Requested-Service-Unit: the tariff's quota
    assert event.result == 2001 and event.services()[SMS]["granted"] == 1
    assert balance(redis_client, prefix, "dave") == before - Fraction("0.09")


def test_the_called_number_selects_the_rate(client, redis_client, prefix):
    info = avp(873, [avp(876, [avp(832, "tel:+4917612345", 10415)], 10415)], 10415)
    before = balance(redis_client, prefix, "alice")
    assert client.request(ccr_avps("d;1", 1, 0, [mscc(VOICE, [])]) + [info]).result == 2001
    assert client.request(ccr_avps("d;1", 3, 1, [mscc(VOICE, None, units(seconds=30))])
                          ).result == 2001
    # CONTRACT §4.1: mobile_peak, 30 s: 0.05 + 60 * 0.10 / 60
    assert balance(redis_client, prefix, "alice") == before - Fraction("0.15")


# -- sessions ----------------------------------------------------------------------------------

def test_a_session_may_move_between_gateways(server, client, redis_client, prefix):
    second = GyServer(redis_client, prefix).start()
    try:
        other = GyClient(second.port, host="pgw2.test")
        assert other.cer().result == 2001
        before = balance(redis_client, prefix, "alice")
        i = client.request(ccr_avps("mv;1", 1, 0, [mscc(VOICE, []), mscc(DATA, [])]))
        assert {rg: s["result"] for rg, s in i.services().items()} == {VOICE: 2001, DATA: 2001}
        # the CCR-U and CCR-T land on the other instance, without Subscription-Id
        u = other.request(ccr_avps("mv;1", 2, 1, [mscc(VOICE, [], units(seconds=60))],
                                   msisdn=None))
        assert u.result == 2001 and u.services()[VOICE]["granted"] == 300
        t = other.request(ccr_avps("mv;1", 3, 2, [], msisdn=None))  # ends voice and data
        assert t.result == 2001
        again = client.request(ccr_avps("mv;1", 3, 2, [], msisdn=None), flags=0x90)
        assert again.result == 2001  # the CCR-T sent again, to the first instance
        after_end = client.request(ccr_avps("mv;1", 2, 3, [mscc(VOICE, [])], msisdn=None))
        assert after_end.result == 5002
        assert balance(redis_client, prefix, "alice") == before - Fraction("0.20")
        view = BalanceStore(redis_client, prefix=prefix).view("alice")
        assert view.reserved == 0 and not view.sessions
        other.close()
    finally:
        second.stop()


def test_reports_of_a_session_no_gateway_knows_are_charged_and_answered_5002(
        client, redis_client, prefix):
    before = balance(redis_client, prefix, "alice")
    u = client.request(ccr_avps("gone;1", 2, 5, [mscc(VOICE, [], units(seconds=60))]))
    assert u.result == 5002 and u.services()[VOICE]["result"] == 5002
    assert balance(redis_client, prefix, "alice") == before - Fraction("0.20")
    assert client.request(ccr_avps("gone;2", 3, 1, [], msisdn=None)).result == 5002


def test_no_decision_in_time_is_3004_and_the_retransmission_gets_the_real_answer(
        redis_client, prefix):
    prepare(redis_client, prefix)

    def slow_engine():
        engine = make_engine(EngineConfig(redis_url=REDIS_URL, prefix=prefix))

        class Slow:
            def process(self, payloads, entered):
                time.sleep(0.5)
                return engine.process(payloads, entered)

            def idle(self):
                engine.idle()

        return Slow()

    server = GyServer(redis_client, prefix, timeout_s=0.1, make=slow_engine).start()
    try:
        c = GyClient(server.port)
        assert c.cer().result == 2001
        ccr = ccr_avps("slow;1", 4, 0, [mscc(SMS, units(events=1))], action=0)
        busy = c.request(ccr)
        assert busy.result == 3004 and busy.header.is_error
        server.bridge.timeout_s = 30
        again = c.request(ccr, flags=0x90)
        assert again.result == 2001
        assert balance(redis_client, prefix, "alice") == Fraction("9.91")  # charged once
    finally:
        server.stop()


def test_in_flight_requests_are_bounded_and_all_answered(redis_client, prefix):
    prepare(redis_client, prefix)
    server = GyServer(redis_client, prefix, max_inflight=2).start()
    seen = []

    class Counting:  # the real bridge, and how many of this door's requests it holds
        inflight = 0

        async def decide(self, requests):
            Counting.inflight += 1
            seen.append(Counting.inflight)
            try:
                await asyncio.sleep(0.005)
                return await server.bridge.decide(requests)
            finally:
                Counting.inflight -= 1

    server.door.ctx.bridge = Counting()
    try:
        c = GyClient(server.port)
        assert c.cer().result == 2001
        sent = {}
        for k in range(30):
            data = encode(272, ccr_avps(f"bp;{k}", 4, 0, [mscc(SMS, units(events=1))],
                                        action=0, msisdn="491700000004"), hbh=50_000 + k)
            sent[50_000 + k] = data
        c.send(b"".join(sent.values()))  # without reading: the door stops reading at 2
        answers = [c.recv() for _ in sent]
        assert sorted(a.header.hop_by_hop_identifier for a in answers) == sorted(sent)
        results = [a.result for a in answers]
        # dave has 3.00: 30 SMS at 0.09 are 2.70
        assert results == [2001] * 30
        assert balance(redis_client, prefix, "dave") == Fraction("0.30")
        assert max(seen) == 2  # concurrent, and never more than the bound
    finally:
        server.stop()


def test_closing_the_door_sends_dpr_and_waits_for_the_dpa(redis_client, prefix):
    prepare(redis_client, prefix)
    server = GyServer(redis_client, prefix).start()
    c = GyClient(server.port)
    assert c.cer().result == 2001
    closing = asyncio.run_coroutine_threadsafe(server.door.close(), server.loop)
    dpr = c.recv()
    assert dpr.header.is_request and dpr.header.command_code == 282
    assert dpr.first(273).value == 0  # Disconnect-Cause REBOOTING
    c.send(encode(282, [avp(268, 2001), avp(264, b"pgw.test"), avp(296, b"test")], flags=0,
                  hbh=dpr.header.hop_by_hop_identifier, app=0))
    closing.result(5)
    assert c.closed()
    server.call(server.client.aclose())
    server.loop.call_soon_threadsafe(server.loop.stop)
    server.thread.join(5)
    server.bridge.close()


def test_metrics_count_requests_answers_and_peers(server, client):
    assert server.metric("chargeflow_diameter_peers") == 1
    client.request(ccr_avps("mt;1", 4, 0, [mscc(SMS, units(events=1))], action=0))
    assert server.metric("chargeflow_diameter_requests_total", command="CCR-E") == 1
    assert server.metric("chargeflow_diameter_answers_total", command="CCR-E",
                         result_code="2001") == 1
    assert server.metric("chargeflow_diameter_answer_seconds_count", command="CCR-E") == 1



def test_a_cer_without_origin_host_is_refused_and_closed(server):
    c = GyClient(server.port)
    cea = c.request([avp(296, b"test"), avp(258, 4)], command=257, app=0)
    assert cea.result == 5005 and cea.failed[0].code == 264 and c.closed()


def test_a_silent_peer_gets_a_dwr_then_is_closed(redis_client, prefix):
    prepare(redis_client, prefix)
    server = GyServer(redis_client, prefix, watchdog_s=0.3).start()
    try:
        c = GyClient(server.port)
        assert c.cer().result == 2001
        watchdog = c.recv()
        assert watchdog.header.is_request and watchdog.header.command_code == 280
        assert c.closed()  # no DWA and silence again: closed
        assert server.metric("chargeflow_diameter_connections_closed_total",
                             reason="watchdog") == 1
    finally:
        server.stop()


def test_fuzz_mutated_ccrs_on_the_wire_never_take_the_door_down(server):
    rng = random.Random(2026)
    base = encode(272, ccr_avps("wf;1", 2, 1, [mscc(VOICE, [], units(seconds=5)),
                                              mscc(DATA, None, units(octets=10))]))
    c = None
    for k in range(60):
        if c is None:
            c = GyClient(server.port, timeout=10)
            assert c.cer().result == 2001
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(20, len(data))] = rng.randrange(256)
        data[12:20] = (90_000 + k).to_bytes(4, "big") * 2  # hop-by-hop, end-to-end
        c.send(bytes(data))
        try:
            answer = c.recv()
        except ConnectionError:  # closed: only for bytes that are not Diameter
            c = None
            continue
        assert answer.header.hop_by_hop_identifier == 90_000 + k
        assert answer.result is not None
    fresh = GyClient(server.port)
    assert fresh.cer().result == 2001 and dwr(fresh) == 2001


def test_engines_too_busy_to_queue_a_request_is_3004(server, client):
    ccr = ccr_avps("busy;1", 4, 0, [mscc(SMS, units(events=1))], action=0)
    limit = server.bridge.max_inflight
    server.bridge.max_inflight = 0  # every request is one too many
    try:
        busy = client.request(ccr)
        assert busy.result == 3004 and busy.header.is_error
        assert busy.first(263).value == "busy;1"
    finally:
        server.bridge.max_inflight = limit
    assert client.request(ccr, flags=0x90).result == 2001
