"""Fixtures of the consumer tests (helpers are in tests/support.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from common.lake import Lake
from common.seaweed import SeaweedS3

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


@dataclass(frozen=True)
class LakeAt:
    """Where a test's lake is: the consumer's environment for it, and the location to read."""

    env: dict[str, str]
    where: Lake | Path


@pytest.fixture(params=["file", "s3"])
def lake_at(request: pytest.FixtureRequest, tmp_path: Path, topic: str) -> LakeAt:
    """The test's lake on ``file://`` (under tmp_path) and on ``s3://`` (SeaweedFS)."""
    if request.param == "file":
        return LakeAt({}, tmp_path / "lake")
    store: SeaweedS3 = request.getfixturevalue("seaweed")
    url = f"s3://{store.bucket}/{topic}"
    env = {
        "INFERSTREAM_LAKE_URL": url,
        "INFERSTREAM_S3_ENDPOINT": store.endpoint,
        "INFERSTREAM_S3_ACCESS_KEY_ID": store.access_key,
        "INFERSTREAM_S3_SECRET_ACCESS_KEY": store.secret_key,
    }
    return LakeAt(env, Lake(url, store.storage_options()))
