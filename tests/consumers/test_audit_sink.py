"""The audit sink against the real PostgreSQL (``support.PG_DSN``): COPY +
ON CONFLICT makes a replay insert nothing twice; the table is created and migrated at
start; and, as a real process, it survives PostgreSQL being unreachable for 20 s."""

from __future__ import annotations

import dataclasses
import time

import psycopg
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from common import events
from consumers.audit import AuditSink
from consumers.errors import SinkUnavailable
from inferstream.procs import Child

from ..support import (
    PG_DSN,
    TcpProxy,
    consumer_env,
    make_event,
    pg_address,
    pg_dsn_via,
    wait_for_log,
    wait_until,
)

TP = TopicPartition("inference-events", 1)


def _records(n: int, first: int = 0) -> list[ConsumerRecord]:
    out = []
    for i in range(n):
        ev = make_event()
        out.append(
            ConsumerRecord(
                TP.topic,
                TP.partition,
                first + i,
                1_700_000_000_000,
                0,
                events.event_key(ev["event_id"]),
                events.encode(ev),
                None,
                16,
                0,
                (),
            )
        )
    return out


def _count(schema: str) -> tuple[int, int]:
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(
            f'SELECT count(*), count(DISTINCT event_id) FROM "{schema}".inference_audit'
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_replayed_batches_insert_nothing_twice_and_poison_is_a_dead_letter(pg_schema):
    recs = _records(300)
    recs[7] = dataclasses.replace(recs[7], value=b'{"schema_version": 1}')
    sink = AuditSink(PG_DSN, schema=pg_schema)
    sink.add(TP, recs[:200])
    assert sink.flush() == {TP: (200, "")}
    sink.add(TP, recs[100:])  # a replay overlapping what is already in the table
    assert sink.flush() == {TP: (300, "")}
    assert _count(pg_schema) == (299, 299)
    dead = sink.take_dead_letters()
    assert [(d.partition, d.offset, d.reason) for d in dead] == [(1, 7, "missing field event_id")]
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(
            f"SELECT features->>'f00', kafka_offset, event_time FROM \"{pg_schema}\".inference_audit "
            "ORDER BY kafka_offset LIMIT 1"
        ).fetchone()
    first = events.decode(recs[0].value)
    assert row is not None and float(row[0]) == first["features"]["f00"] and row[1] == 0
    assert row[2].tzinfo is not None
    sink.close()


def test_an_old_table_is_migrated_at_start(pg_schema):
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        conn.execute(
            f'CREATE TABLE "{pg_schema}".inference_audit (event_id uuid PRIMARY KEY, event_time timestamptz, '
            "model_name text, model_version text, status text, features jsonb, latency_ms double precision)"
        )
    sink = AuditSink(PG_DSN, schema=pg_schema)
    sink.add(TP, _records(10))
    sink.flush()
    assert _count(pg_schema) == (10, 10)
    with psycopg.connect(PG_DSN) as conn:
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s", (pg_schema,)
            )
        }
    assert {"kafka_offset", "scores", "synthetic", "ingested_at"} <= cols
    sink.close()


def test_unreachable_postgres_raises_retriable_and_keeps_the_batch(pg_schema):
    proxy = TcpProxy(pg_address())  # never started: nothing listens on its port
    sink = AuditSink(pg_dsn_via(proxy.port), schema=pg_schema, connect_timeout_s=2)
    sink.add(TP, _records(5))
    with pytest.raises(SinkUnavailable, match="INFERSTREAM_POSTGRES_DSN"):
        sink.flush()
    assert sink.pending_rows == 5
    proxy.start()
    try:
        assert sink.flush() == {TP: (5, "")}
        assert _count(pg_schema) == (5, 5)
    finally:
        proxy.cut()
        sink.close()


@pytest.mark.slow
def test_audit_consumer_survives_postgres_unreachable_for_20s(
    kafka_bootstrap, topic, tmp_path, stream_factory, pg_schema
):
    n = 3000
    proxy = TcpProxy(pg_address()).start()
    env = consumer_env(
        kafka_bootstrap,
        topic,
        tmp_path,
        "audit-outage",
        INFERSTREAM_POSTGRES_DSN=pg_dsn_via(proxy.port),
        INFERSTREAM_AUDIT_SCHEMA=pg_schema,
    )
    auditor = Child("audit", ["consume", "audit"], env, tmp_path / "audit.log")
    stream = stream_factory(topic, n, burst=20, pause_s=0.2)  # ~100 events/s: spans the outage
    try:
        wait_for_log(auditor, "assigned group=", timeout_s=90)
        stream.start()

        def some_rows() -> bool:
            assert auditor.alive(), auditor.tail()
            try:
                return _count(pg_schema)[0] > 0
            except psycopg.errors.UndefinedTable:
                return False

        wait_until(some_rows, 60, "the first audit rows", on_timeout=auditor.tail)
        proxy.cut()
        before = _count(pg_schema)[0]
        assert before < n // 2, "the stream ended before the outage began"
        time.sleep(20)  # the scenario: PostgreSQL stays unreachable for 20 s
        assert _count(pg_schema)[0] == before  # nothing got through the cut proxy
        assert auditor.alive(), auditor.tail()
        proxy.start()
        stream.hurry()  # the outage is over: the rest of the stream at once
        stream.join(timeout=120)
        assert stream.error is None, stream.error

        def all_rows() -> bool:
            assert auditor.alive(), auditor.tail()
            return _count(pg_schema)[0] >= n

        wait_until(all_rows, 90, f"{n} audit rows", interval_s=0.5, on_timeout=auditor.tail)
        assert _count(pg_schema) == (n, n)
        with psycopg.connect(PG_DSN) as conn:
            ids = {str(r[0]) for r in conn.execute(f'SELECT event_id FROM "{pg_schema}".inference_audit')}
        assert ids == set(stream.ids)
    finally:
        auditor.terminate()
        proxy.cut()
    assert "flush failed" in auditor.log_path.read_text()  # the outage was seen, and retried
