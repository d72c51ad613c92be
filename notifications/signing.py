"""Webhook signatures: ``X-Chargeflow-Signature: t=<unix seconds>,v1=<hex>`` where the hex is
HMAC-SHA256 with the webhook's secret over ``"<t>.<body>"`` (the body's exact bytes).

The timestamp is inside the signed text, so a receiver that refuses signatures older than
its tolerance (default 300 s) refuses a captured request replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Chargeflow-Signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A signature header that does not verify (malformed, wrong, or too old)."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, now_s: int | None = None) -> str:
    """The header value for ``body`` signed at ``now_s`` (unix seconds; default now)."""
    t = int(time.time()) if now_s is None else now_s
    return f"t={t},v1={signature(secret, t, body)}"


def verify(secret: bytes, header: str, body: bytes, *, now_s: int | None = None,
           tolerance_s: int = DEFAULT_TOLERANCE_S) -> int:
    """Check ``header`` for ``body``; the signed timestamp, or ``SignatureError``. A header
    may carry several ``v1=`` values (a secret being rotated); one that matches suffices."""
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                t = int(value)
            except ValueError:
                raise SignatureError("the timestamp t= is not an integer") from None
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        raise SignatureError("expected t=<unix seconds>,v1=<hex>")
    now = int(time.time()) if now_s is None else now_s
    if abs(now - t) > tolerance_s:
        raise SignatureError(f"the timestamp is {now - t} s away from now "
                             f"(tolerance {tolerance_s} s)")
    expected = signature(secret, t, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("the signature does not match")
    return t
