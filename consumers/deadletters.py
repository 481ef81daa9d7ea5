"""Dead letters: records no sink can store, routed to ``inference-events.dlq``.

A dead letter keeps the original key and value; its source coordinates, the reason, the
consumer group, the value's size and sha256 travel as headers (``dlq.topic``,
``dlq.partition``, ``dlq.offset``, ``dlq.reason``, ``dlq.group``, ``dlq.size``,
``dlq.sha256``), so a replay tool can put it back and check it.

A dead letter always fits the DLQ topic: when the record would be larger than the
limit (the ``max_message_bytes`` setting, lowered to the DLQ topic's own
``max.message.bytes``, read at start), its value is replaced by a preview of its first
:data:`PREVIEW_BYTES` bytes and the header ``dlq.truncated: value`` is set; ``dlq.size``
and ``dlq.sha256`` still describe the whole original, which stays readable at its
coordinates for the source topic's retention. A key over :data:`MAX_KEY_BYTES` is
previewed the same way (``dlq.key_size``, ``dlq.key_sha256``, ``dlq.truncated: key,value``).

Durability: :meth:`DeadLetterProducer.publish` returns only when every dead letter is
acknowledged by the in-sync replicas (acks=all); the runner commits the source offsets
after that (and, for the lake, makes the batch durable in its table only after that:
the table holds the offsets it resumes from). When some are not acknowledged it raises
NotAcknowledged holding only those: a retry never sends an acknowledged letter again.
A crash between publishing and committing republishes them: dead letters are at least
once. A copy is identified by its source coordinates (the ``dlq.topic``,
``dlq.partition`` and ``dlq.offset`` headers, see :func:`coordinates`): a reader dedupes
by them (the record's key is the original key, which several records may share).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from common.errors import DependencyUnavailable
from common.topics import start_admin
from consumers.errors import NotAcknowledged
from consumers.producers import BATCH_BYTES, AcknowledgedProducer, Headers

log = logging.getLogger(__name__)

PREVIEW_BYTES = 4096  # enough to see what a record was; the original stays in its topic
MAX_KEY_BYTES = 1024
# Kafka's default max.message.bytes is 1 MiB (plus batch overhead); stay well below it
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str

    def headers(self, group: str) -> Headers:
        value = self.value or b""
        return [
            ("dlq.topic", self.topic.encode()),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
            ("dlq.reason", self.reason.encode()[:1000]),
            ("dlq.group", group.encode()),
            ("dlq.size", str(len(value)).encode()),
            ("dlq.sha256", hashlib.sha256(value).hexdigest().encode()),
        ]

    def fitted(self, group: str, limit: int) -> tuple[bytes | None, bytes | None, Headers] | None:
        """(key, value, headers) of the dead letter as a record of at most ``limit``
        bytes, previewed if needed; None if not even a preview fits."""
        key, value, headers = self.key, self.value, self.headers(group)
        if _size(key, value, headers) <= limit:
            return key, value, headers
        truncated = ["value"]
        if key is not None and len(key) > MAX_KEY_BYTES:
            headers += [
                ("dlq.key_size", str(len(key)).encode()),
                ("dlq.key_sha256", hashlib.sha256(key).hexdigest().encode()),
            ]
            key = key[:MAX_KEY_BYTES]
            truncated.insert(0, "key")
        headers.append(("dlq.truncated", ",".join(truncated).encode()))
        room = limit - _size(key, b"", headers)
        if room < 0:
            return None
        return key, (value or b"")[: min(PREVIEW_BYTES, room)], headers


def coordinates(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
) -> tuple[str, int, int, str]:
    """(topic, partition, offset, reason) of a record read back from the DLQ topic."""
    h = {k: v.decode() for k, v in headers}
    return h["dlq.topic"], int(h["dlq.partition"]), int(h["dlq.offset"]), h["dlq.reason"]


def _size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """The record's size as the producer and the broker count it (batch overhead included)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


async def topic_max_message_bytes(bootstrap_servers: str, topic: str) -> int | None:
    """The topic's ``max.message.bytes``, or None if the broker does not say."""
    admin = await start_admin(bootstrap_servers)
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for response in responses:
        for _err, _msg, _type, _name, entries in response.resources:
            for entry in entries:
                if entry[0] == "max.message.bytes" and entry[1]:
                    return int(entry[1])
    return None


class DeadLetterProducer(AcknowledgedProducer):
    """Publishes dead letters durably. ``start``/``stop`` are safe to call twice."""

    what = "dead-letter"

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        group: str,
        client_id: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(bootstrap_servers=bootstrap_servers, client_id=f"{client_id}-dlq")
        self.topic = topic
        self.group = group
        self.limit = max_message_bytes

    def max_batch_size(self) -> int:
        return max(1, min(BATCH_BYTES, self.limit))

    async def start(self) -> None:
        if self._producer is not None:
            return
        # Kafka refuses a record over the topic's limit; Tansu has none: honour it here
        try:
            topic_limit = await topic_max_message_bytes(self.bootstrap_servers, self.topic)
        except (KafkaError, DependencyUnavailable) as exc:
            log.warning("max.message.bytes of %s unknown (%r): using %d", self.topic, exc, self.limit)
        else:
            if topic_limit is not None and topic_limit < self.limit:
                log.info("dead letters sized for %s max.message.bytes=%d", self.topic, topic_limit)
                self.limit = topic_limit
        await super().start()

    async def publish(self, letters: list[DeadLetter]) -> None:
        """Every letter acknowledged, or NotAcknowledged holding the ones that were not."""
        if not letters:
            return

        def record(letter: DeadLetter) -> tuple[str, bytes | None, bytes | None, Headers]:
            fitted = letter.fitted(self.group, self.limit)
            if fitted is None:
                # what Kafka would answer; Tansu has no limit of its own
                raise MessageSizeTooLargeError(
                    f"dead letter {letter.topic}[{letter.partition}]@{letter.offset} does not fit "
                    f"{self.limit} bytes even as a preview: raise max.message.bytes of {self.topic}"
                )
            key, value, headers = fitted
            if value is not letter.value:
                log.warning(
                    "dead letter %s[%d]@%d of %d bytes sent as a %d-byte preview",
                    letter.topic,
                    letter.partition,
                    letter.offset,
                    len(letter.value or b""),
                    len(value or b""),
                )
            return self.topic, value, key, headers

        sent, unsent, error = await self._send_each(letters, record)
        for letter in sent:
            log.warning(
                "dead letter %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.reason
            )
        if unsent:
            raise NotAcknowledged(
                f"dead-letter topic {self.topic}: {len(unsent)} of {len(letters)} not acknowledged: {error}",
                unsent,
            )
