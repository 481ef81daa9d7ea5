"""The streaming drift monitor's episode alerts in their own lake table,
``drift_episodes``, landed by the lake group from ``inference-alerts`` exactly once like
the events (offsets in the table commit, one row per ``alert_id``), so that the hourly
drift flow, which reads the lake and not Kafka, can list the episodes of its window.

One row per alert: ``kind`` (``drift_episode_opened`` or ``drift_episode_closed``),
``episode_id`` (both alerts of an episode share it), ``model_name``, ``model_version``,
``column``, ``method``, ``score``, ``threshold``, ``window_events``,
``consecutive_evaluations``, ``alerted_at`` (the monitor's clock when it decided), and
the Kafka coordinates. Partitioned by model and the hour of ``alerted_at``.

Other records on the topic (the fraud scorer's alerts, anything else) are not this
table's: they are skipped and counted (``skipped``), never dead-lettered. An episode
alert missing a field is skipped the same way and logged.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from aiokafka import ConsumerRecord, TopicPartition

from common import lake
from consumers.deadletters import DeadLetter
from consumers.drift_episodes import CLOSED, OPENED
from consumers.lake import LakeSink

log = logging.getLogger(__name__)
EPISODES_TABLE = lake.EPISODES_TABLE
KINDS = (OPENED, CLOSED)

SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "alert_id": pl.String,
    "kind": pl.String,
    "episode_id": pl.String,
    "model_name": pl.String,
    "model_version": pl.String,
    "column": pl.String,
    "method": pl.String,
    "score": pl.Float64,
    "threshold": pl.Float64,
    "window_events": pl.Int64,
    "consecutive_evaluations": pl.Int64,
    "alerted_at": pl.Datetime("us", "UTC"),
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
}
_TEXT = ("alert_id", "kind", "episode_id", "model_name", "model_version", "column", "method")


def episode_row(raw: bytes | None) -> dict[str, Any] | None:
    """The table row of one drift episode alert; None for any other record (or a
    malformed one, logged)."""
    if raw is None or b"drift_episode_" not in raw:  # cheap: most records are not ours
        return None
    try:
        a = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(a, dict) or a.get("kind") not in KINDS:
        return None
    try:
        row: dict[str, Any] = {k: str(a[k]) for k in _TEXT}
        row["score"] = float(a["score"])
        row["threshold"] = float(a["threshold"])
        row["window_events"] = int(a["window_events"])
        row["consecutive_evaluations"] = int(a["consecutive_evaluations"])
        at = datetime.fromisoformat(a["alerted_at"])
        if at.tzinfo is None:
            raise ValueError("alerted_at has no time zone")
        row["alerted_at"] = at
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("episodes: a %s alert without a usable field (%r) is not landed", a.get("kind"), exc)
        return None
    return row


class EpisodesLakeSink(LakeSink):
    time_column = "alerted_at"
    dedupe_key = "alert_id"

    def __init__(
        self, where: lake.Lake | Path | str, table: str = EPISODES_TABLE, *, group: str = "lake"
    ) -> None:
        super().__init__(where, table, group=group)
        self.skipped = 0

    def _frame(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], dead: list[DeadLetter]
    ) -> pl.DataFrame | None:
        rows = []
        skipped = 0
        for rec in records:
            row = episode_row(rec.value)
            if row is None:
                skipped += 1
                continue
            row["kafka_partition"] = rec.partition
            row["kafka_offset"] = rec.offset
            rows.append(row)
        if skipped:
            with self._lock:  # chunks are parsed in several threads
                self.skipped += skipped
        if not rows:
            return None
        return pl.DataFrame(rows, schema=SCHEMA).with_columns(
            pl.col("alerted_at").dt.convert_time_zone("UTC")
        )
