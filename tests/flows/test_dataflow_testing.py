"""``build_flow`` on Bytewax's own testing source and sink, with no broker: the dataflow the
Kafka run uses, fed from a list and collected into one, against a real Redis. Every payload
is decided or rejected once, in order, with the same outputs ``Engine.process`` gives for
the same payloads directly, and a ``Consumed`` mark comes out behind the outputs of the
requests before it (what the Kafka sink's commits rely on). In each of the execution modes
Bytewax offers, as its own test suite runs them (``pytests/conftest.py`` ``entry_point``):
``run_main`` and ``cluster_main`` with one and with two workers in the process; the testing
source has one partition, so one worker reads it all and the others stay idle."""

from __future__ import annotations

import orjson
import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.dataflow import build_flow
from flows.engine import Output
from flows.kafka_io import Consumed, _Worker
from tests.flows.oracle import strip_latency
from tests.flows.test_engine import ACCOUNTS, mixed_batch, new_engine, prepare

BAD = [b"{not json", b"", b'{"id":"neg","kind":"event","account":"alice","service":"sms",'
       b'"ts":1795510800000,"used":-1}', b"\xff\xfe"]


def _view(outputs: list[Output]) -> dict[str, list[tuple[bytes | None, dict]]]:
    """Each kind's outputs in order (a batch's rejects come before its decisions)."""
    view: dict[str, list] = {"decision": [], "charge": [], "reject": []}
    for o in outputs:
        view[o.kind].append((o.key, strip_latency(orjson.loads(o.value))))
    return view


def _run(mode: str, flow) -> None:
    if mode == "run_main":
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=int(mode[-1]))


@pytest.mark.parametrize("mode", ["run_main", "cluster_main-1", "cluster_main-2"])
def test_flow_on_testing_connectors_decides_as_the_engine_does(redis_client, prefix, mode):
    prepare(redis_client, prefix, ACCOUNTS)
    prepare(redis_client, f"{prefix}:direct", ACCOUNTS)
    payloads = [orjson.dumps(r) for r in mixed_batch()]
    payloads[3:3] = BAD[:2]
    payloads += BAD[2:]
    mark = Consumed(_Worker(None, "requests"), 0, 7)
    items: list = [*payloads[:7], mark, *payloads[7:]]
    engines = []

    def make_engine():
        engines.append(new_engine(prefix))
        return engines[-1]

    out: list = []
    _run(mode, build_flow(TestingSource(items, batch_size=5), TestingSink(out), make_engine))

    direct = new_engine(f"{prefix}:direct")
    expected = direct.process(payloads)
    outputs = [o for o in out if type(o) is Output]
    assert _view(outputs) == _view(expected)
    assert len(engines) == 1  # one worker reads, one engine, made on first use
    decided = [o["id"] for _, o in _view(outputs)["decision"]]
    assert decided == [r["id"] for r in mixed_batch()]  # each valid request once, in order
    assert len(_view(outputs)["reject"]) == len(BAD)
    # the mark, once, behind every output of the seven payloads before it
    assert [x for x in out if type(x) is Consumed] == [mark]
    before = {orjson.loads(p)["id"] for p in payloads[:7] if p.startswith(b'{"')}
    last_before = max(i for i, o in enumerate(out) if type(o) is Output
                      and o.kind != "reject" and orjson.loads(o.value)["id"] in before)
    assert out.index(mark) > last_before
    for e in (*engines, direct):
        e.charger.store.r.close()
