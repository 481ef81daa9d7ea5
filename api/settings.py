"""Settings of the inference API (one class; read only by the entry point)."""

from __future__ import annotations

from pydantic import Field

from common.settings import CommonSettings


class ApiSettings(CommonSettings):
    model_name: str = Field(default="car-loan", description="Model served")
    model_version: str = Field(default="latest", description="Version served, or 'latest'")
    host: str = "127.0.0.1"
    port: int = 8000
    queue_size: int = Field(default=100_000, ge=1, description="Events buffered in memory")
    batch_max_events: int = Field(default=500, ge=1)
    linger_ms: int = Field(default=20, ge=0)
    compression: str | None = Field(default="zstd", description="zstd, lz4, gzip or none")
    kafka_acks: str = "all"
    kafka_enable_idempotence: bool = Field(
        default=False, description="true on real Kafka; Tansu has no idempotent producer"
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1)
