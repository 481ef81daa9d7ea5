"""Feedback (ground truth from ``inference-feedback``) in its own lake table,
``inference_feedback``, landed exactly once like the events (offsets in the table
commit, one row per ``feedback_id``): it subclasses the lake sink and replaces only
how a batch becomes a frame.

Columns, as ``flows.quality`` reads them: ``event_id`` (the prediction id the label
belongs to), ``label`` (text: labels may be booleans, numbers or strings),
``feedback_id``, ``feedback_time``, ``model_name`` (``"unknown"`` when the sender did
not say), and the Kafka coordinates. Partitioned by model and feedback hour. Feedback
is low-volume, so records are decoded one by one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl
from aiokafka import ConsumerRecord, TopicPartition

from common import lake
from common.events import SCHEMA_VERSION
from consumers.deadletters import DeadLetter
from consumers.lake import LakeSink
from consumers.sink import Sink
from consumers.validate import UUID_RE, PoisonError, decode_object, parse_time

if TYPE_CHECKING:
    from polars.datatypes import DataTypeClass

FEEDBACK_TABLE = lake.FEEDBACK_TABLE

_SCHEMA: dict[str, pl.DataType | DataTypeClass] = {
    "event_id": pl.String,
    "label": pl.String,
    "feedback_id": pl.String,
    "feedback_time": pl.Datetime("us", "UTC"),
    "model_name": pl.String,
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
}


def decode_feedback(raw: bytes | None) -> dict[str, Any]:
    row = decode_object(raw)
    if row.get("schema_version") != SCHEMA_VERSION:
        raise PoisonError(f"unknown schema_version {row.get('schema_version')!r}")
    for key in ("feedback_id", "prediction_id"):
        if not isinstance(row.get(key), str) or not UUID_RE.match(row[key]):
            raise PoisonError(f"missing field {key} (a UUID)")
    if not isinstance(row.get("event_time"), str):
        raise PoisonError("missing field event_time")
    label = row.get("label")
    if label is None or isinstance(label, dict | list):
        raise PoisonError("missing field label (a boolean, number or string)")
    model = row.get("model_name")
    return {
        "event_id": row["prediction_id"],
        "label": orjson.dumps(label).decode() if not isinstance(label, str) else label,
        "feedback_id": row["feedback_id"],
        "feedback_time": parse_time(row["event_time"]),
        "model_name": model if isinstance(model, str) and model else "unknown",
    }


class FeedbackLakeSink(LakeSink):
    time_column = "feedback_time"
    dedupe_key = "feedback_id"

    def __init__(
        self, where: lake.Lake | Path | str, table: str = FEEDBACK_TABLE, *, group: str = "lake"
    ) -> None:
        super().__init__(where, table, group=group)

    def _frame(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], dead: list[DeadLetter]
    ) -> pl.DataFrame | None:
        rows = []
        for rec in records:
            try:
                row = decode_feedback(rec.value)
            except PoisonError as exc:
                dead.append(DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, str(exc)))
                continue
            row["kafka_partition"] = rec.partition
            row["kafka_offset"] = rec.offset
            rows.append(row)
        return pl.DataFrame(rows, schema=_SCHEMA) if rows else None


class RoutingSink(Sink):
    """One consumer group over several topics, each with its own sink (the lake group
    lands events and feedback). Every call goes to the sink of the record's topic.
    Dead letters first if any of its sinks asks for it: ``prepare`` and
    ``flush_prepared`` go to those, the others flush as usual in ``flush_prepared`` and
    hand their dead letters to ``take_dead_letters``."""

    def __init__(self, sinks: Mapping[str, Sink]) -> None:
        self.sinks = sinks
        self.pipelined = all(s.pipelined for s in sinks.values())
        self.dead_letters_before_durable = any(s.dead_letters_before_durable for s in sinks.values())
        self._prepared_dead: list[DeadLetter] = []

    def assigned(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> dict[TopicPartition, int]:
        resume: dict[TopicPartition, int] = {}
        for topic, sink in self.sinks.items():
            mine = {tp: v for tp, v in partitions.items() if tp.topic == topic}
            if mine:
                resume.update(sink.assigned(mine) or {})
        return resume

    def resumes_from_store(self, tp: TopicPartition) -> bool:
        sink = self.sinks.get(tp.topic)
        return sink is not None and sink.resumes_from_store(tp)

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        parts = list(partitions)
        for topic, sink in self.sinks.items():
            sink.revoked([tp for tp in parts if tp.topic == topic])
        gone = {(tp.topic, tp.partition) for tp in parts}
        self._prepared_dead = [d for d in self._prepared_dead if (d.topic, d.partition) not in gone]

    @property
    def pending_rows(self) -> int:
        return sum(s.pending_rows for s in self.sinks.values())

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self.sinks[tp.topic].add(tp, records)

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        out: dict[TopicPartition, tuple[int, str]] = {}
        for sink in self.sinks.values():
            out.update(sink.flush())
        return out

    def prepare(self) -> list[DeadLetter]:
        # a sink that prepared hands its dead letters out once: when a later one fails,
        # they are returned by the next call
        dead, self._prepared_dead = self._prepared_dead, []
        for sink in self.sinks.values():
            if not sink.dead_letters_before_durable:
                continue
            try:
                dead += sink.prepare()
            except BaseException:
                self._prepared_dead = dead
                raise
        return dead

    def flush_prepared(self) -> dict[TopicPartition, tuple[int, str]]:
        out: dict[TopicPartition, tuple[int, str]] = {}
        for sink in self.sinks.values():
            out.update(sink.flush_prepared() if sink.dead_letters_before_durable else sink.flush())
        return out

    def take_dead_letters(self) -> list[DeadLetter]:
        return [d for s in self.sinks.values() for d in s.take_dead_letters()]
