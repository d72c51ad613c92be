"""The engine's Kafka source and sink against the real (embedded) broker: outputs are
produced without a wait per batch, and a source snapshot — the offset a restarted engine
resumes from — never passes a request whose outputs have not reached the broker."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from charging.errors import BrokerError
from flows.broker import EmbeddedBroker, ensure_topics, free_port
from flows.dataflow import Consumed, OutputSink, RequestSource, split_marks
from flows.engine import Output


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    address = b.start()
    yield address
    b.stop()


def read_all(address: str, topic: str, expect: int, timeout_s: float = 30) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": address, "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expect and time.monotonic() < deadline:
        out += [m.value() for m in consumer.consume(1000, 0.1) if not m.error()]
    consumer.close()
    return out


def test_snapshot_names_only_requests_whose_outputs_reached_the_broker(broker):
    requests, outputs = f"req-{uuid.uuid4().hex}", f"out-{uuid.uuid4().hex}"
    ensure_topics(broker, {requests: 1, outputs: 1})
    producer = Producer({"bootstrap.servers": broker})
    for i in range(50):
        producer.produce(requests, f"r{i}".encode())
    assert producer.flush(30) == 0

    source = RequestSource(broker, requests, threading.Event())
    part = source.build_part("in", source.list_parts()[0], None)
    items: list = []
    deadline = time.monotonic() + 30
    while len(items) < 51 and time.monotonic() < deadline:
        items += part.next_batch()
    payloads, marks = split_marks(items)
    assert payloads == [f"r{i}".encode() for i in range(50)]
    assert [m.offset for m in marks][-1] == 50 and all(type(m) is Consumed for m in marks)

    # read, but no output produced yet: a restart must read everything again
    assert part.snapshot() == OFFSET_BEGINNING

    sink = OutputSink(broker, lambda kind: outputs).build("out", 0, 1)
    first, rest = payloads[:20], payloads[20:]
    mark = Consumed(marks[0].partition, 20)
    sink.write_batch([Output("decision", None, p) for p in first] + [mark])
    assert part.snapshot() == 20
    assert len(sink.producer) == 0  # flushed first: the first 20 outputs are on the broker
    assert read_all(broker, outputs, 20) == first
    sink.write_batch([Output("decision", None, p) for p in rest] + marks)
    assert part.snapshot() == 50
    assert read_all(broker, outputs, 50) == payloads
    sink.close()
    part.close()


def test_an_output_the_broker_never_took_stops_the_snapshot(broker):
    requests = f"req-{uuid.uuid4().hex}"
    ensure_topics(broker, {requests: 1})
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(requests, b"r0")
    assert producer.flush(30) == 0
    part = RequestSource(broker, requests, threading.Event()).build_part("in", f"0-{requests}",
                                                                        None)
    items: list = []
    deadline = time.monotonic() + 30
    while not items and time.monotonic() < deadline:
        items = part.next_batch()
    payloads, marks = split_marks(items)
    # a sink whose broker does not answer: the output times out undelivered
    nowhere = f"127.0.0.1:{free_port()}"
    sink = OutputSink(nowhere, lambda kind: "out", {"message.timeout.ms": 300}).build("o", 0, 1)
    sink.write_batch([Output("decision", None, p) for p in payloads] + marks)
    with pytest.raises(BrokerError, match="could not be delivered"):
        part.snapshot()  # rather than record an offset past a request whose output is lost
    with pytest.raises(BrokerError):
        sink.write_batch([])  # and the worker stops
    part.close()
