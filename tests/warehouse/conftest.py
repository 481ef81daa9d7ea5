"""Both warehouse backends: a DuckDB file per test, and the real PostgreSQL server with
one schema per test (dropped after)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from warehouse.backends import open_warehouse
from warehouse.base import Warehouse
from warehouse.settings import WarehouseSettings


@pytest.fixture(params=["duckdb", "postgres"])
def wh(request: pytest.FixtureRequest, tmp_path: Path, pg_dsn: str) -> Iterator[Warehouse]:
    schema = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    ws = WarehouseSettings(
        data_dir=tmp_path, warehouse_backend=request.param, warehouse_schema=schema, postgres_dsn=pg_dsn
    )
    w = open_warehouse(ws)
    yield w
    w.close()
    if request.param == "postgres":
        with psycopg.connect(pg_dsn, autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            con.execute(f"DROP SCHEMA IF EXISTS {schema}_internal CASCADE")
