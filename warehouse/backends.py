"""Opening the configured warehouse backend (DuckDB embedded, or PostgreSQL)."""

from __future__ import annotations

from common.errors import ConfigError
from warehouse.base import Warehouse
from warehouse.duckdb_backend import DuckDBWarehouse
from warehouse.postgres_backend import PostgresWarehouse
from warehouse.settings import WarehouseSettings


def open_warehouse(settings: WarehouseSettings) -> Warehouse:
    """The configured backend, with its tables created."""
    wh: Warehouse
    if settings.warehouse_backend == "postgres":
        if not settings.postgres_dsn:
            raise ConfigError("INFERSTREAM_WAREHOUSE_BACKEND=postgres needs INFERSTREAM_POSTGRES_DSN")
        wh = PostgresWarehouse(settings.postgres_dsn, settings.warehouse_schema)
    else:
        wh = DuckDBWarehouse(settings.duckdb_path, settings.warehouse_schema)
    wh.ensure_tables()
    return wh
