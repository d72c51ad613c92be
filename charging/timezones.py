"""UTC-offset transition tables, so the kernels can find local time without zoneinfo.

The kernels turn an epoch instant into local wall-clock time by a binary search in a table
of (instant, offset) pairs built here from ``zoneinfo`` for the supported rating range.
Requests outside that range are rejected when decoded (``charging.requests``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

#: Supported rating times: 1970-01-01T00:00Z up to (excluded) 2100-01-01T00:00Z.
MIN_TS_MS = 0
MAX_TS_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) * 1000
_SCAN_S = 6 * 3600  # no zone changes its offset twice within six hours


def _offset(zone: ZoneInfo, t: int) -> int:
    off = datetime.fromtimestamp(t, tz=zone).utcoffset()
    assert off is not None
    return int(off.total_seconds())


@lru_cache(maxsize=16)
def transitions(zone_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(starts, offsets): offsets[i] seconds apply from instant starts[i] (epoch seconds).

    starts[0] is the start of the supported range, so every supported instant has an entry.
    """
    zone = ZoneInfo(zone_name)
    end = MAX_TS_MS // 1000
    starts = [MIN_TS_MS // 1000]
    offsets = [_offset(zone, starts[0])]
    t = starts[0]
    while t < end:
        nxt = min(t + _SCAN_S, end)
        if _offset(zone, nxt) != offsets[-1]:
            lo, hi = t, nxt  # offset at lo is offsets[-1], at hi it differs: bisect the change
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == offsets[-1]:
                    lo = mid
                else:
                    hi = mid
            starts.append(hi)
            offsets.append(_offset(zone, hi))
        t = nxt
    a, b = np.array(starts, dtype=np.int64), np.array(offsets, dtype=np.int64)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b
