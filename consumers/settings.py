"""Settings of the stream consumers (one class; read only by the entry point)."""

from __future__ import annotations

from pydantic import Field

from common.settings import CommonSettings


class ConsumerSettings(CommonSettings):
    group_id: str | None = Field(default=None, description="Consumer group; default: the sink's name")
    max_batch_rows: int = Field(default=50_000, ge=1)
    max_batch_age_s: float = Field(default=2.0, gt=0, description="Freshness bound")
    poll_timeout_ms: int = Field(default=500, ge=1)
    session_timeout_ms: int = Field(default=6_000, ge=6_000)
    fault_pause_before_commit_s: float = Field(
        default=0.0, ge=0, description="Fault injection for crash tests: pause between flush and commit"
    )
