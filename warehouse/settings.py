"""Where BI tables live: a DuckDB file (default) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WarehouseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERSTREAM_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Root directory for all local data")
    warehouse_backend: Literal["duckdb", "postgres"] = Field(
        default="duckdb",
        description="duckdb: one file under the data dir; postgres: INFERSTREAM_POSTGRES_DSN",
    )
    warehouse_path: Path | None = Field(
        default=None, description="DuckDB file; default <data_dir>/warehouse.duckdb"
    )
    warehouse_schema: str = Field(default="bi", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    postgres_dsn: str | None = Field(
        default=None, description="libpq connection string, shared with the audit consumer"
    )

    @property
    def duckdb_path(self) -> Path:
        return self.warehouse_path or self.data_dir / "warehouse.duckdb"
