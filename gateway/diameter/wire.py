"""Diameter on the wire (RFC 6733 §3, §4): framing, strict decoding, answers.

The codec is python-diameter's (``Message``, ``MessageHeader``, ``Avp`` and its dictionary);
what this module adds is what a server facing real peers must check before trusting it:

* **framing** — ``read_message`` takes one message off a stream. A version other than 1, a
  length under 20, not a multiple of 4 or above ``MAX_MESSAGE`` is not Diameter at all:
  ``NotDiameter``, and the connection is closed (only that one);
* **AVP framing** — python-diameter accepts an AVP whose length is shorter than its own
  header and reads on; ``check_avps`` walks every AVP list (and, through ``children``, every
  grouped AVP that is read) and refuses such an AVP, or one running past its container,
  with 5014 DIAMETER_INVALID_AVP_LENGTH naming it in Failed-AVP;
* **answers** — ``AnswerError`` carries a Result-Code, the Failed-AVP contents and an
  Error-Message; ``answer`` encodes an answer to a request's header (E bit for the protocol
  errors, 3xxx).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable

from diameter.message import Message, MessageHeader
from diameter.message.avp import Avp
from diameter.message.avp.avp import get_avp_dictionary_entry
from diameter.message.avp.errors import AvpDecodeError
from diameter.message.constants import (
    AVP_ERROR_MESSAGE,
    AVP_FAILED_AVP,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_RESULT_CODE,
    AVP_SESSION_ID,
)
from diameter.message.packer import ConversionError, Unpacker

HEADER = 20
#: a message longer than this is not a charging message: the connection is closed
MAX_MESSAGE = 1 << 20
FLAG_REQUEST, FLAG_PROXIABLE, FLAG_ERROR, FLAG_RETRANSMIT = 0x80, 0x40, 0x20, 0x10
AVP_FLAG_VENDOR, AVP_FLAG_MANDATORY = 0x80, 0x40

# Result-Codes (RFC 6733 §7.1, RFC 4006 §9)
SUCCESS = 2001
COMMAND_UNSUPPORTED, TOO_BUSY, APPLICATION_UNSUPPORTED = 3001, 3004, 3007
INVALID_HDR_BITS, UNKNOWN_PEER = 3008, 3010
END_USER_SERVICE_DENIED, CREDIT_LIMIT_REACHED = 4010, 4012
AVP_UNSUPPORTED, UNKNOWN_SESSION_ID, INVALID_AVP_VALUE, MISSING_AVP = 5001, 5002, 5004, 5005
AVP_NOT_ALLOWED, AVP_OCCURS_TOO_MANY_TIMES = 5008, 5009
NO_COMMON_APPLICATION, UNABLE_TO_COMPLY = 5010, 5012
INVALID_AVP_LENGTH = 5014
USER_UNKNOWN, RATING_FAILED = 5030, 5031


class NotDiameter(Exception):
    """Bytes that are not a Diameter message: close the connection they came on."""


class AnswerError(Exception):
    """A request that gets an error answer: ``code``, the AVPs for Failed-AVP, a reason."""

    def __init__(self, code: int, reason: str, failed: Iterable[Avp] = ()):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.failed = list(failed)

    @property
    def protocol(self) -> bool:
        """A protocol error (3xxx): the answer has the E bit and the generic format."""
        return 3000 <= self.code < 4000


async def read_message(reader: asyncio.StreamReader, first: bytes | None = None) -> bytes:
    """One whole message off ``reader`` (``first``: its first 4 bytes, already read).

    Raises ``NotDiameter`` for a bad version or length, ``asyncio.IncompleteReadError`` when
    the stream ends (also in the middle of a message)."""
    head = first if first is not None else await reader.readexactly(4)
    version, length = head[0], int.from_bytes(head[1:4], "big")
    if version != 1:
        raise NotDiameter(f"version {version} (Diameter is version 1)")
    if length < HEADER or length % 4 or length > MAX_MESSAGE:
        raise NotDiameter(f"message length {length} (20 to {MAX_MESSAGE}, a multiple of 4)")
    return head + await reader.readexactly(length - 4)


def check_avps(data: bytes, start: int = 0) -> None:
    """Every AVP of ``data[start:]`` has a length that covers its header and stays inside
    ``data``; else ``AnswerError`` 5014 naming the AVP (its code, flags and vendor)."""
    pos, end = start, len(data)
    while pos < end:
        if end - pos < 8:
            raise AnswerError(INVALID_AVP_LENGTH, f"{end - pos} bytes left where an AVP "
                              "header of 8 was expected")
        code, flags_length = struct.unpack_from("!II", data, pos)
        flags, length = flags_length >> 24, flags_length & 0xFFFFFF
        vendor = 0
        header = 8
        if flags & AVP_FLAG_VENDOR:
            header = 12
            if end - pos >= 12:
                vendor = struct.unpack_from("!I", data, pos + 8)[0]
        if length < header or pos + length > end:
            bad = Avp(code, vendor, b"", flags)
            raise AnswerError(INVALID_AVP_LENGTH, f"AVP {code} has length {length} with "
                              f"{end - pos} bytes left", [bad])
        pos += (length + 3) & ~3


def decode(data: bytes) -> Message:
    """A whole message (as ``read_message`` returned it) as a plain python-diameter
    ``Message`` of its header and top-level AVPs (the command classes are not used: they
    read AVP values as they are built); ``AnswerError`` 5014 for bad AVP framing."""
    check_avps(data, HEADER)
    header = MessageHeader.from_bytes(data)
    unpacker = Unpacker(data)
    unpacker.set_position(HEADER)
    avps = []
    try:
        while not unpacker.is_done():
            avps.append(Avp.from_unpacker(unpacker))
    except (ConversionError, AvpDecodeError) as exc:  # check_avps makes this unlikely
        raise AnswerError(INVALID_AVP_LENGTH, f"AVPs that do not decode: {exc}") from exc
    return Message(header, avps)


def decode_header(data: bytes) -> MessageHeader:
    return MessageHeader.from_bytes(data)


def children(avp: Avp) -> list[Avp]:
    """The AVPs inside a grouped AVP, framing checked (``AnswerError`` 5014)."""
    check_avps(avp.payload)
    try:
        value = avp.value
    except (AvpDecodeError, ConversionError) as exc:
        raise AnswerError(INVALID_AVP_LENGTH, f"{avp.name} does not hold AVPs: {exc}",
                          [avp]) from exc
    if not isinstance(value, list):
        raise AnswerError(INVALID_AVP_VALUE, f"AVP {avp.code} is not grouped", [avp])
    return value


def known(avp: Avp) -> bool:
    """The codec's dictionary knows this AVP (an unknown one with the M bit is 5001)."""
    return get_avp_dictionary_entry(avp.code, avp.vendor_id) is not None


def unsupported_mandatory(avps: Iterable[Avp]) -> None:
    """5001 DIAMETER_AVP_UNSUPPORTED for the first AVP with the M bit that nothing here
    knows (RFC 6733 §4.1)."""
    for avp in avps:
        if avp.is_mandatory and not known(avp):
            raise AnswerError(AVP_UNSUPPORTED, f"AVP {avp.code} (vendor {avp.vendor_id}) has "
                              "the M bit and is not supported", [avp])


def value_of(avp: Avp):
    """An AVP's decoded value; a payload of the wrong size for its type is 5014, one that
    does not decode (bad UTF-8, say) 5004."""
    try:
        return avp.value
    except (AvpDecodeError, ConversionError, UnicodeDecodeError, ValueError,
            struct.error) as exc:
        code = INVALID_AVP_VALUE if isinstance(exc, UnicodeDecodeError) else \
            INVALID_AVP_LENGTH
        raise AnswerError(code, f"{avp.name} does not decode: {exc}", [avp]) from exc


def new(code: int, value=None, vendor: int = 0, mandatory: bool | None = None) -> Avp:
    """An AVP of the codec's dictionary (its M bit as the dictionary says, or ``mandatory``)."""
    return Avp.new(code, vendor, value=value, is_mandatory=mandatory)


def placeholder(code: int, vendor: int = 0) -> Avp:
    """An AVP of ``code`` with a zero-filled payload of the minimum size of its type: what
    Failed-AVP holds for a missing AVP (RFC 6733 §7.5)."""
    avp = Avp.new(code, vendor)
    if type(avp).__name__ in ("AvpUnsigned32", "AvpInteger32", "AvpFloat32", "AvpTime"):
        avp.payload = bytes(4)
    elif type(avp).__name__ in ("AvpUnsigned64", "AvpInteger64", "AvpFloat64"):
        avp.payload = bytes(8)
    return avp


def failed_avp(avps: list[Avp]) -> Avp:
    return new(AVP_FAILED_AVP, list(avps))


def answer(request: MessageHeader, avps: list[Avp], *, error: bool = False) -> bytes:
    """An answer to ``request`` (its command, application and identifiers)."""
    flags = (request.command_flags & FLAG_PROXIABLE) | (FLAG_ERROR if error else 0)
    header = MessageHeader(1, 0, flags, request.command_code, request.application_id,
                           request.hop_by_hop_identifier, request.end_to_end_identifier)
    return Message(header, avps).as_bytes()


def request(command: int, application: int, hop_by_hop: int, end_to_end: int,
            avps: list[Avp]) -> bytes:
    header = MessageHeader(1, 0, FLAG_REQUEST, command, application, hop_by_hop, end_to_end)
    return Message(header, avps).as_bytes()


def error_answer(request_header: MessageHeader, err: AnswerError, origin_host: str,
                 origin_realm: str, session_id: str | None = None,
                 echo: Iterable[Avp] = ()) -> bytes:
    """The answer to a request refused with ``err``: the command's own format with
    ``echo`` (for a CCA: Auth-Application-Id, CC-Request-Type and -Number) for a permanent
    failure, the generic answer-message with the E bit for a protocol error."""
    avps = []
    if session_id is not None:
        avps.append(new(AVP_SESSION_ID, session_id))
    avps += [new(AVP_ORIGIN_HOST, origin_host.encode()),
             new(AVP_ORIGIN_REALM, origin_realm.encode()),
             new(AVP_RESULT_CODE, err.code)]
    if not err.protocol:
        avps += list(echo)
    avps.append(new(AVP_ERROR_MESSAGE, err.reason[:200]))
    if err.failed:
        avps.append(failed_avp(err.failed))
    return answer(request_header, avps, error=err.protocol)
