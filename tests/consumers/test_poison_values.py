"""Every value class a fuzzer sends through the contract (strings with NUL and other
control characters, emoji, huge strings, -0.0, 1e308, 64-bit edges) and junk a record
that bypassed the API could carry (lone surrogate escapes, deep nesting, wrong types,
out-of-range times, NUL in a model name or a key), produced straight to the events
topic: the lake, audit and fraud consumers, as real processes, keep running, and every
record is either stored or dead-lettered with its coordinates, never both, never lost."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import duckdb
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from common import events, lake
from inferstream.procs import Child

from ..support import PG_DSN, committed, consumer_env, make_event, read_dlq

Coords = tuple[int, int]  # (partition, offset)


def _event(features: dict[str, object], **envelope: object) -> dict[str, object]:
    ev = events.build_event(
        event_id=events.uuid7(),
        event_time=datetime.now(UTC),
        model_name="m",
        model_version="1",
        features=features,
        prediction=1,
        scores={"0": 0.5, "1": 0.5},
        latency_ms=0.1,
    )
    ev.update(envelope)
    return ev


def _values() -> tuple[list[bytes], list[bytes]]:
    """(values the contract allows: every sink must store them, PostgreSQL aside for
    NUL; junk: each sink stores it or dead-letters it)."""
    strings = [
        "",
        "a\u0000b",
        "\u0001\u001f\u007f\u0085",
        "\u2028\u2029",
        "🙂👍🏽 ünïcødé",
        "\ufeffbom",
        "x" * 300_000,
        "\\u0000 (a backslash, not a NUL)",
        "\"'`;--",
        "null",
    ]
    allowed = [orjson.dumps(_event({"num": 1.0, "cat": s, "flag": True})) for s in strings]
    numbers = [b"0", b"-0.0", b"-0", b"1e308", b"-1e308", b"5e-324", b"1E+2", b"1.5"]
    numbers += [b"9223372036854775807", b"-9223372036854775808", b"18446744073709551616"]
    for raw in numbers:  # spelled as a client (or a fuzzer) spells them, not as orjson would
        ev = orjson.dumps(_event({"num": 12345.678, "cat": "n", "flag": False}))
        allowed.append(ev.replace(b"12345.678", raw))
    surrogate = orjson.dumps(_event({"num": 1.0, "cat": "SURROGATE", "flag": True}))
    deep: dict[str, object] = {"a": 1}
    for _ in range(200):
        deep = {"n": deep}
    junk = [
        surrogate.replace(b"SURROGATE", b"\\ud800"),  # lone surrogates in raw JSON
        surrogate.replace(b"SURROGATE", b"\\udfff"),
        surrogate.replace(b"SURROGATE", b"\\ud83d\\ude00"),  # a valid pair: an emoji
        orjson.dumps(_event({"num": 1.0, "cat": "x", "flag": True, "junk": deep})),
        orjson.dumps(_event({"num": 1.0, "cat": "x", "flag": True, "junk": [1, "a", None, {"b": [[]]}]})),
        b'{"x":' + b"[" * 1100 + b"]" * 1100 + b"}",
        orjson.dumps(_event({"num": "1.0", "cat": 5, "flag": "yes"})),
        orjson.dumps(_event({"num": 1.0, "cat": "x", "flag": True}, event_time="9999-12-31T23:59:59-14:00")),
        orjson.dumps(_event({"num": 1.0, "cat": "x", "flag": True}, model_name="m\u0000")),
        orjson.dumps(_event({"num": 1.0, "cat": "x", "flag": True, "k\u0000": 1})),
        b"\xff\xfe not utf-8",
    ]
    return allowed, junk


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> dict[Coords, bytes]:
    """All to partition 0, before any consumer starts: the batch a consumer reads mixes
    junk with valid events (one junk value must not change a column's type for all)."""

    async def produce() -> dict[Coords, bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [(await producer.send(topic, v, partition=0), v) for v in values]
            return {((m := await f).partition, m.offset): v for f, v in futures}
        finally:
            await producer.stop()

    return asyncio.run(produce())


def _lake_rows(lake_dir) -> dict[Coords, tuple[object, object]]:
    con = duckdb.connect()
    try:
        if not lake.register_duckdb(con, lake_dir, lake.EVENTS_TABLE):
            return {}
        rows = con.sql(
            f"SELECT kafka_partition, kafka_offset, features.cat, features.num FROM {lake.EVENTS_TABLE}"
        ).fetchall()
    finally:
        con.close()
    return {(p, o): (cat, num) for p, o, cat, num in rows}


def _audit_rows(schema: str) -> dict[Coords, tuple[object, object]]:
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            f"SELECT kafka_partition, kafka_offset, features->>'cat', features->>'num' "
            f'FROM "{schema}".inference_audit'
        ).fetchall()
    return {(p, o): (cat, num) for p, o, cat, num in rows}


@pytest.mark.slow
def test_every_value_class_is_stored_or_dead_lettered_by_every_sink_and_no_consumer_stops(
    kafka_bootstrap,
    topic,
    tmp_path,
    pg_schema,
):
    allowed, junk = _values()
    after = [events.encode(make_event("m")) for _ in range(50)]  # the stream goes on behind them
    produced = _produce(kafka_bootstrap, topic, allowed + junk + after)
    by_value = {v: c for c, v in produced.items()}
    allowed_at = {by_value[v] for v in allowed}
    end = {0: len(produced)}
    tps = [TopicPartition(topic, p) for p in range(4)]
    procs = {
        sink: Child(
            sink,
            ["consume", sink],
            consumer_env(
                kafka_bootstrap,
                topic,
                tmp_path,
                f"{sink}-poison-values",
                INFERSTREAM_POSTGRES_DSN=PG_DSN,
                INFERSTREAM_AUDIT_SCHEMA=pg_schema,
            ),
            tmp_path / f"{sink}.log",
        )
        for sink in ("lake", "audit", "fraud")
    }
    try:
        deadline = time.monotonic() + 150
        pending = set(procs)
        while pending and time.monotonic() < deadline:
            for sink in list(pending):
                assert procs[sink].alive(), f"{sink} stopped:\n{procs[sink].tail(40)}"
                if committed(kafka_bootstrap, f"{sink}-poison-values", tps) == end:
                    pending.discard(sink)
            time.sleep(0.5)
        assert not pending, {s: procs[s].tail() for s in pending}
        assert all(p.alive() for p in procs.values())
        letters = read_dlq(kafka_bootstrap, f"{topic}.dlq", expected=len(junk), timeout_s=10)
        dead: dict[str, dict[Coords, str]] = {sink: {} for sink in procs}
        for rec in letters:
            h = {k: v.decode() for k, v in rec.headers}
            coords = (int(h["dlq.partition"]), int(h["dlq.offset"]))
            assert coords not in dead[h["dlq.group"].split("-")[0]], "a dead letter sent twice"
            dead[h["dlq.group"].split("-")[0]][coords] = h["dlq.reason"]
        stored = {"lake": _lake_rows(tmp_path / "lake"), "audit": _audit_rows(pg_schema)}
        for sink, rows in stored.items():
            both = set(rows) & set(dead[sink])
            assert not both, f"{sink}: stored and dead-lettered: {both}"
            assert set(rows) | set(dead[sink]) == set(produced), f"{sink}: lost records"
        # fraud stores nothing: what it did not dead-letter, it scored (and committed)
        assert set(dead["fraud"]) <= set(produced) - allowed_at
        # what the contract allows is stored, losslessly (PostgreSQL cannot hold a NUL)
        for coords in allowed_at:
            ev = orjson.loads(produced[coords])
            cat, num = ev["features"]["cat"], float(ev["features"]["num"])
            assert coords in stored["lake"], dead["lake"].get(coords)
            lake_cat, lake_num = stored["lake"][coords]
            assert lake_cat == cat
            assert lake_num == num and math.copysign(1, lake_num) == math.copysign(1, num)
            if "\u0000" in cat:
                assert "PostgreSQL cannot store it" in dead["audit"][coords]
                continue
            assert coords in stored["audit"], dead["audit"].get(coords)
            audit_cat, audit_num = stored["audit"][coords]
            assert audit_cat == cat
            assert float(audit_num) == num  # jsonb numbers are numeric: -0.0 reads back as 0
        for sink, proc in procs.items():
            assert f"group={sink}-poison-values" in proc.log_path.read_text()
    finally:
        codes = {sink: p.terminate() for sink, p in procs.items()}
    assert codes == {"lake": 0, "audit": 0, "fraud": 0}, codes
