"""Fixtures of the consumer tests (helpers are in tests/support.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ..support import PG_DSN, Stream


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema name for an audit table, dropped after the test."""
    name = f"audit_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def stream_factory(kafka_bootstrap: str):
    started: list[Stream] = []

    def make(topic: str, n: int, **kw: object) -> Stream:
        s = Stream(kafka_bootstrap, topic, n, **kw)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield make
    for s in started:
        if s.is_alive():
            s.join(timeout=30)
