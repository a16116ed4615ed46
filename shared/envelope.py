"""CloudEvents 1.0 over Kafka in binary mode, through the ``cloudevents`` library.

Attributes travel as ``ce_*`` headers, the JSON payload is the message value, and the Kafka key is the
partition key (the case id; the agency id for registry events) so one case's events stay in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

TYPE_PREFIX = "org.refnet."
ERROR_HEADER = "refnet-error"
#: RefNet events carry ids and flat facts (a few KiB at most); anything far bigger is not one of ours, and is
#: refused before a handler tries to store it.
MAX_EVENT_BYTES = 256 * 1024
_REQUIRED_HEADERS = ("ce_id", "ce_source", "ce_specversion", "ce_type")


class UndecodableEvent(ValueError):
    """The message is not a CloudEvent we can read: it goes to the dead-letter topic."""


@dataclass(frozen=True)
class Event:
    """A CloudEvent as RefNet uses it: every field a handler may rely on, nothing else."""

    id: str
    source: str
    type: str
    subject: str | None
    partition_key: str
    time: datetime
    data: dict[str, Any]

    @property
    def short_type(self) -> str:
        """``org.refnet.referral.accepted.v1`` -> ``referral.accepted.v1``."""
        return self.type.removeprefix(TYPE_PREFIX)


def full_type(short_type: str) -> str:
    return short_type if short_type.startswith(TYPE_PREFIX) else TYPE_PREFIX + short_type


def encode(event: Event) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """-> (key, value, headers) for aiokafka."""
    attributes: dict[str, Any] = {
        "id": event.id,
        "source": event.source,
        "type": full_type(event.type),
        "specversion": "1.0",
        "time": event.time,
        "datacontenttype": "application/json",
        "partitionkey": event.partition_key,
    }
    if event.subject:
        attributes["subject"] = event.subject
    message = ce_kafka.to_binary_event(CloudEvent(attributes=attributes, data=event.data))
    key = message.key if isinstance(message.key, bytes) else str(message.key or "").encode()
    return key, message.value, list(message.headers.items())


def decode(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | tuple[Any, ...]) -> Event:
    """Parse a Kafka record; anything that is not a complete binary-mode CloudEvent is undecodable."""
    header_map = {name: val for name, val in headers}
    if not any(name.startswith(ce_kafka.CE_PREFIX) for name in header_map):
        raise UndecodableEvent("no ce_ headers: not a binary-mode CloudEvent")
    # The library would invent a missing id (a fresh UUID per delivery, which defeats every inbox) and assume a
    # spec version: the four attributes CloudEvents requires must be there as sent.
    absent = [name for name in _REQUIRED_HEADERS if not header_map.get(name)]
    if absent:
        raise UndecodableEvent(f"required CloudEvents attributes missing: {', '.join(absent)}")
    size = len(value or b"") + len(key or b"") + sum(len(name) + len(val or b"") for name, val in header_map.items())
    if size > MAX_EVENT_BYTES:
        raise UndecodableEvent(f"{size} bytes: larger than any RefNet event ({MAX_EVENT_BYTES} bytes at most)")
    try:
        message = ce_kafka.KafkaMessage(headers=header_map, key=key, value=value or b"")
        ce = ce_kafka.from_binary_event(message)
        data = ce.get_data()
        if isinstance(data, (bytes, str)):
            data = json.loads(data)
    except Exception as exc:
        raise UndecodableEvent(f"{type(exc).__name__}: not a readable CloudEvent") from exc
    if not isinstance(data, dict):
        raise UndecodableEvent("data is not a JSON object")
    time = ce.get_time() or datetime.now(UTC)
    partition_key = ce.get_extension("partitionkey") or (key.decode(errors="replace") if key else "")
    return Event(
        id=ce.get_id(),
        source=ce.get_source(),
        type=ce.get_type(),
        subject=ce.get_subject(),
        partition_key=str(partition_key),
        time=time,
        data=data,
    )
