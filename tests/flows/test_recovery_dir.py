"""A cluster's recovery directory: process 0 creates its partitions (all at once, as far as
the others can see), the other processes wait for them."""

from __future__ import annotations

import threading
import time

from bytewax.recovery import init_db_dir

from flows.cli_engine import _init_recovery, _wait_for_recovery


def test_partitions_appear_whole_and_the_other_processes_wait_for_them(tmp_path):
    rdir = tmp_path / "recovery"
    assert not _wait_for_recovery(rdir, 4, timeout_s=0.3)  # nothing there: gives up

    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: seen.append(_wait_for_recovery(rdir, 4, 30)))
    waiter.start()
    time.sleep(0.2)
    _init_recovery(rdir, 4, init_db_dir)
    waiter.join(30)
    assert seen == [True]
    assert sorted(p.name for p in rdir.iterdir()) == [f"part-{i}.sqlite3" for i in range(4)]
