"""How the engine's Kafka clients are configured, and where their logs go.

``KafkaSettings`` is read once by the CLI: the bootstrap servers, the operator's own
librdkafka settings (``--kafka-config FILE``, ``-X key=value``: SASL, TLS, timeouts), the
consumer group and the topic names. Every client the engine makes (consumer, producer,
admin) takes ``client()``'s dictionary, so a SASL/TLS setting reaches all of them.

librdkafka logs through the ``chargeflow.kafka`` logger (so ``--log-format json`` covers
them) instead of printing to stderr, and a line that repeats — a broker that does not
answer is reported every few milliseconds — is written once per ``REPEAT_S`` with a count of
the ones held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Producer

DEFAULT_GROUP = "chargeflow"
REPEAT_S = 30.0

#: Settings the engine's guarantees rest on; an operator's configuration may not change them
#: (docs/operations.md, "Position and replays").
RESERVED = {
    "enable.auto.commit": "the engine commits offsets itself, once the outputs before them "
                          "are on the broker",
    "enable.auto.offset.store": "the engine commits offsets itself",
    "group.id": "use --group",
    "bootstrap.servers": "use --kafka",
    "auto.offset.reset": "a partition without a committed offset is read from its beginning, "
                         "so that no acknowledged request is skipped",
}

_NUMBERS = re.compile(r"\d+")


class KafkaConfigError(ValueError):
    """An operator's Kafka setting that cannot be used (wrong input: exit 1)."""


def parse_properties(text: str, source: str) -> dict[str, str]:
    """``key=value`` lines (librdkafka's names), ``#`` or ``!`` comments, blank lines."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise KafkaConfigError(f"{source}:{n}: expected key=value (a librdkafka setting "
                                   f"such as security.protocol=SASL_SSL), got {raw.strip()!r}")
        if key in out:
            raise KafkaConfigError(f"{source}:{n}: {key} is set twice")
        out[key] = value
    return out


def load_settings(config_file: str | None, overrides: Iterable[str]) -> dict[str, str]:
    """The operator's librdkafka settings: the file first, then each ``-X key=value``."""
    settings: dict[str, str] = {}
    if config_file is not None:
        try:
            text = Path(config_file).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KafkaConfigError(f"cannot read --kafka-config {config_file}: {exc}") from exc
        settings.update(parse_properties(text, config_file))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KafkaConfigError(f"-X {item!r}: expected key=value, e.g. "
                                   "-X sasl.mechanism=SCRAM-SHA-512")
        settings[key.strip()] = value.strip()
    for key in settings:
        if key in RESERVED:
            raise KafkaConfigError(f"the Kafka setting {key} cannot be changed: "
                                   f"{RESERVED[key]}; remove it")
    try:  # librdkafka checks names and values as a client is made (it connects later)
        Producer({**settings, "logger": KAFKA_LOG})
    except KafkaException as exc:
        raise KafkaConfigError(f"the Kafka settings cannot be used: "
                               f"{describe_error(exc)}") from exc
    return settings


def describe_error(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


@dataclass(frozen=True)
class KafkaSettings:
    brokers: str
    config: Mapping[str, str] = field(default_factory=dict)  # the operator's settings
    group: str = DEFAULT_GROUP

    def client(self, **extra: object) -> dict:
        """Configuration for one client: the engine's ``extra`` defaults, the operator's
        settings over them, the bootstrap servers, and the project's logging."""
        return {**extra, **self.config, "bootstrap.servers": self.brokers,
                "logger": KAFKA_LOG, "error_cb": _error}


class RepeatFilter(logging.Filter):
    """Lets a line through once per ``every_s`` (lines that differ only in their numbers are
    one line), then says how many like it were held back."""

    def __init__(self, every_s: float = REPEAT_S, clock=time.monotonic):
        super().__init__()
        self.every_s = every_s
        self.clock = clock
        self._seen: dict[str, list] = {}  # shape -> [last written, held back since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        shape = _NUMBERS.sub("#", record.getMessage())
        now = self.clock()
        with self._lock:
            seen = self._seen.get(shape)
            if seen is not None and now - seen[0] < self.every_s:
                seen[1] += 1
                return False
            held = seen[1] if seen is not None else 0
            self._seen[shape] = [now, 0]
            if len(self._seen) > 1000:  # bounded: forget the oldest shapes
                for key in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[key]
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in the last " \
                         f"{self.every_s:.0f} s)"
            record.args = None
        return True


KAFKA_LOG = logging.getLogger("chargeflow.kafka")
KAFKA_LOG.addFilter(RepeatFilter())


def _error(err) -> None:
    """librdkafka's error events (all brokers down, authentication refused, ...); a failed
    connection is already in its log lines."""
    if err.code() != KafkaError._TRANSPORT:
        KAFKA_LOG.error("Kafka: %s", err.str())
