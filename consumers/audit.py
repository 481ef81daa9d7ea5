"""Audit sink: every inference event as one row of a PostgreSQL table, exactly once.

A batch is COPYed into a temporary staging table, then moved with
``INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING`` in the same transaction:
a replayed batch (a crash between the commit here and the Kafka offset commit) inserts
nothing twice. The table is created, or migrated to the current columns, before the
first batch. If PostgreSQL is unreachable, ``flush`` raises SinkUnavailable and keeps
the batch; the runner retries with backoff and commits no offset meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
import psycopg
from aiokafka import ConsumerRecord, TopicPartition
from psycopg import sql

from consumers.deadletters import DeadLetter
from consumers.errors import SinkUnavailable
from consumers.sink import Sink
from consumers.validate import PoisonError, decode_event, parse_time

log = logging.getLogger(__name__)

AUDIT_TABLE = "inference_audit"
SCHEMA_VERSION = 1  # of the table; bump with a step in _MIGRATIONS

# (column, type) in table order; the staging table copies it
COLUMNS: list[tuple[str, str]] = [
    ("event_id", "uuid PRIMARY KEY"),
    ("event_time", "timestamptz NOT NULL"),
    ("model_name", "text NOT NULL"),
    ("model_version", "text NOT NULL"),
    ("status", "text NOT NULL"),
    ("prediction", "text"),
    ("scores", "jsonb"),
    ("features", "jsonb NOT NULL"),
    ("latency_ms", "double precision NOT NULL"),
    ("error", "text"),
    ("synthetic", "boolean NOT NULL DEFAULT false"),
    ("kafka_topic", "text NOT NULL"),
    ("kafka_partition", "integer NOT NULL"),
    ("kafka_offset", "bigint NOT NULL"),
    ("ingested_at", "timestamptz NOT NULL DEFAULT now()"),
]
_COPY_COLUMNS = [c for c, _ in COLUMNS if c != "ingested_at"]


class AuditSink(Sink):
    def __init__(
        self, dsn: str, *, schema: str = "public", table: str = AUDIT_TABLE, connect_timeout_s: int = 5
    ):
        self.dsn = dsn
        self.schema = schema
        self.table = table
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._migrated = False
        self._rows: list[tuple[tuple[Any, ...], ConsumerRecord[bytes, bytes]]] = []  # (row, source)
        self._next: dict[TopicPartition, int] = {}
        self._pending_dead: list[DeadLetter] = []
        self._dead: list[DeadLetter] = []

    @property
    def qualified(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))

    # -- connection and schema ------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, connect_timeout=self.connect_timeout_s, autocommit=False)
        if not self._migrated:
            self.migrate(self._conn)
            self._migrated = True
        return self._conn

    def migrate(self, conn: psycopg.Connection[Any]) -> None:
        """Create the table, or add the columns a newer version has (idempotent)."""
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in COLUMNS
            )
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.qualified, cols))
            for col, typ in COLUMNS:
                if "PRIMARY KEY" in typ:
                    continue
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        self.qualified,
                        sql.Identifier(col),
                        sql.SQL(typ if "DEFAULT" in typ else typ.replace(" NOT NULL", "")),
                    )
                )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (model_name, event_time)").format(
                    sql.Identifier(f"{self.table}_model_time"), self.qualified
                )
            )
            conn.execute(
                sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    self.qualified, sql.Literal(f"inferstream audit table, version {SCHEMA_VERSION}")
                )
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- Sink protocol ----------------------------------------------------------------
    def assigned(self, partitions: dict[TopicPartition, tuple[int | None, str]]) -> None:
        """The table is keyed by event id: nothing to prepare per partition."""

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        gone = set(partitions)
        self._rows = [
            (row, rec) for row, rec in self._rows if TopicPartition(rec.topic, rec.partition) not in gone
        ]
        self._pending_dead = [
            d for d in self._pending_dead if TopicPartition(d.topic, d.partition) not in gone
        ]
        for tp in gone:
            self._next.pop(tp, None)

    @property
    def pending_rows(self) -> int:
        return len(self._rows)

    def add(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            try:
                ev = decode_event(rec.value)
                row = (
                    ev["event_id"],
                    parse_time(ev["event_time"]),
                    ev["model_name"],
                    ev["model_version"],
                    ev["status"],
                    None if ev.get("prediction") is None else str(ev["prediction"]),
                    None if ev.get("scores") is None else orjson.dumps(ev["scores"]).decode(),
                    orjson.dumps(ev["features"]).decode(),
                    float(ev["latency_ms"]),
                    ev.get("error"),
                    bool(ev.get("synthetic", False)),
                    rec.topic,
                    rec.partition,
                    rec.offset,
                )
            except PoisonError as exc:
                self._pending_dead.append(
                    DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, str(exc))
                )
                continue
            self._rows.append((row, rec))
        self._next[tp] = records[-1].offset + 1

    def take_dead_letters(self) -> list[DeadLetter]:
        out, self._dead = self._dead, []
        return out

    def flush(self) -> dict[TopicPartition, tuple[int, str]]:
        if self._rows:
            try:
                self._insert_or_bisect(self._rows)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.close()
                raise SinkUnavailable(
                    f"PostgreSQL unreachable ({exc.__class__.__name__}: {str(exc).strip()[:200]}); "
                    "check INFERSTREAM_POSTGRES_DSN"
                ) from exc
        commits = {tp: (off, "") for tp, off in self._next.items()}
        self._rows = []
        self._next = {}
        self._dead.extend(self._pending_dead)
        self._pending_dead = []
        return commits

    def _insert_or_bisect(self, rows: list[tuple[tuple[Any, ...], ConsumerRecord[bytes, bytes]]]) -> None:
        """Insert the rows; a value PostgreSQL cannot store (a NUL in text or jsonb: its
        JSON cannot hold \\u0000) fails the whole batch with a DataError, so the batch
        is halved until that row is alone, and it becomes a dead letter with the reason.
        k such rows cost ~2k·log2(n) extra transactions; the usual batch costs one."""
        try:
            self._insert([row for row, _ in rows])
        except psycopg.DataError as exc:
            if len(rows) > 1:
                half = len(rows) // 2
                self._insert_or_bisect(rows[:half])
                self._insert_or_bisect(rows[half:])
                return
            rec = rows[0][1]
            reason = f"PostgreSQL cannot store it: {exc.__class__.__name__}: {str(exc).strip()}"[:500]
            self._pending_dead.append(
                DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, reason)
            )

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._connection()
        cols = sql.SQL(", ").join(map(sql.Identifier, _COPY_COLUMNS))
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS audit_staging "
                    "(LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                ).format(self.qualified)
            )
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY audit_staging ({}) FROM STDIN").format(cols)) as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} ({cols}) SELECT {cols} FROM audit_staging "
                        "ON CONFLICT (event_id) DO NOTHING"
                    ).format(self.qualified, cols=cols)
                )
