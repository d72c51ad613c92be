"""Webhook signatures: a receiver's view."""

from __future__ import annotations

import pytest

from notifications.signing import SignatureError, sign, verify

SECRET = b"whsec_test"
BODY = b'{"id":"ntf_1","type":"low_balance"}'
NOW = 1_800_000_000


def test_a_signature_verifies_and_returns_its_time():
    assert verify(SECRET, sign(SECRET, BODY, NOW), BODY, now_s=NOW + 10) == NOW


@pytest.mark.parametrize(("header", "body", "secret", "words"), [
    (sign(SECRET, BODY, NOW), BODY + b" ", SECRET, "does not match"),
    (sign(SECRET, BODY, NOW), BODY, b"other", "does not match"),
    (sign(SECRET, BODY, NOW - 301), BODY, SECRET, "tolerance"),
    (sign(SECRET, BODY, NOW + 301), BODY, SECRET, "tolerance"),
    ("v1=abc", BODY, SECRET, "expected"),
    ("t=x,v1=abc", BODY, SECRET, "integer"),
])
def test_wrong_or_old_signatures_are_refused(header, body, secret, words):
    with pytest.raises(SignatureError, match=words):
        verify(secret, header, body, now_s=NOW)


def test_the_timestamp_is_signed_so_it_cannot_be_moved_forward():
    t, _, v1 = sign(SECRET, BODY, NOW - 1000).partition(",")
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, f"t={NOW},{v1}", BODY, now_s=NOW)


def test_one_of_several_v1_values_may_match_during_a_secret_rotation():
    good = sign(SECRET, BODY, NOW).split(",")[1]
    assert verify(SECRET, f"t={NOW},v1={'0' * 64},{good}", BODY, now_s=NOW) == NOW


def test_the_receiver_snippet_in_the_docs_verifies_and_refuses():
    import re
    import time
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, re.S)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the documentation's own example
    now = int(time.time())
    scope["verify"](SECRET, sign(SECRET, BODY, now), BODY)
    for header, words in ((sign(SECRET, BODY, now - 301), "too old"),
                          (sign(b"x", BODY, now), "bad signature"), ("v1=1", "malformed")):
        with pytest.raises(ValueError, match=words):
            scope["verify"](SECRET, header, BODY)
