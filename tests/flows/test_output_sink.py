"""The engine's Kafka source and sink against the real (embedded) broker: requests are read
by a consumer group, outputs are produced without a wait per batch, and an offset is
committed — the position a restarted engine resumes from — only once the outputs of every
request before it have reached the broker."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from charging.errors import BrokerError
from flows.broker import EmbeddedBroker, ensure_topics, free_port
from flows.engine import Output
from flows.kafka import KafkaSettings
from flows.kafka_io import Consumed, OutputSink, RequestSource, Workers, split_marks


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


def committed(address: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": address, "group.id": group})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()


def read_batches(part, want: int, timeout_s: float = 40) -> list:
    items: list = []
    deadline = time.monotonic() + timeout_s
    while sum(1 for x in items if type(x) is not Consumed) < want and \
            time.monotonic() < deadline:
        items += part.next_batch()
    return items


def produce(address: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": address})
    for i in range(n):
        producer.produce(topic, f"r{i}".encode())
    assert producer.flush(30) == 0


def test_a_commit_names_only_requests_whose_outputs_reached_the_broker(broker):
    requests, outputs = f"req-{uuid.uuid4().hex}", f"out-{uuid.uuid4().hex}"
    ensure_topics(broker, {requests: 1, outputs: 1})
    produce(broker, requests, 50)
    settings = KafkaSettings(broker, group=f"g-{uuid.uuid4().hex}")
    workers = Workers()
    part = RequestSource(settings, requests, threading.Event(), workers=workers).build(
        "in", 0, 1)
    items = read_batches(part, 50)
    payloads, marks = split_marks(items)
    assert payloads == [f"r{i}".encode() for i in range(50)]
    assert (marks[-1].partition, marks[-1].offset) == (0, 50)

    # read, but no output produced yet: nothing is committed, a restart reads it all again
    sink = OutputSink(settings, lambda kind: outputs, workers=workers,
                      commit_every_s=3600).build("out", 0, 1)
    sink.commit()
    assert committed(broker, settings.group, requests) < 0

    first, rest = payloads[:20], payloads[20:]
    sink.write_batch([Output("decision", None, p) for p in first] +
                     [Consumed(marks[0].worker, 0, 20)])
    sink.commit()
    assert len(sink.producer) == 0  # flushed first: the first 20 outputs are on the broker
    assert committed(broker, settings.group, requests) == 20
    assert read_all(broker, outputs, 20) == first
    sink.write_batch([Output("decision", None, p) for p in rest] + marks)
    sink.close()  # a graceful stop: flush, commit, leave the group
    part.close()
    assert committed(broker, settings.group, requests) == 50
    assert read_all(broker, outputs, 50) == payloads

    # a new member of the group resumes after the last commit
    produce(broker, requests, 3)
    again = RequestSource(settings, requests, threading.Event()).build("in", 0, 1)
    payloads, marks = split_marks(read_batches(again, 3))
    assert payloads == [b"r0", b"r1", b"r2"]  # the three new ones (offsets 50-52)
    assert marks[-1].offset == 53
    again.worker.consumer.close()


def test_an_output_the_broker_never_took_stops_the_commit(broker):
    requests = f"req-{uuid.uuid4().hex}"
    ensure_topics(broker, {requests: 1})
    produce(broker, requests, 1)
    settings = KafkaSettings(broker, group=f"g-{uuid.uuid4().hex}")
    workers = Workers()
    part = RequestSource(settings, requests, threading.Event(), workers=workers).build(
        "in", 0, 1)
    payloads, marks = split_marks(read_batches(part, 1))
    # a sink whose broker does not answer: the output times out undelivered
    nowhere = KafkaSettings(f"127.0.0.1:{free_port()}", group=settings.group)
    sink = OutputSink(nowhere, lambda kind: "out", {"message.timeout.ms": 300},
                      workers=workers, commit_every_s=3600).build("o", 0, 1)
    sink.write_batch([Output("decision", None, p) for p in payloads] + marks)
    with pytest.raises(BrokerError, match="could not be delivered"):
        sink.commit()  # rather than commit an offset past a request whose output is lost
    with pytest.raises(BrokerError):
        sink.write_batch([])  # and the worker stops
    part.worker.consumer.close()
    assert committed(broker, settings.group, requests) < 0
