"""Settings of the stream consumers (one class; read only by the entry point)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.events import ALERTS_TOPIC, DLQ_TOPIC
from common.settings import CommonSettings
from consumers.deadletters import DEFAULT_MAX_MESSAGE_BYTES
from consumers.runner_state import FaultStep


class ConsumerSettings(CommonSettings):
    group_id: str | None = Field(default=None, description="Consumer group; default: the sink's name")
    max_batch_rows: int = Field(
        default=50_000,
        ge=1,
        description="Flush when this many records are pending; while a flush runs, fetching goes on up to "
        "twice this many (and twice max_batch_bytes), then waits for it",
    )
    max_batch_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Flush when this much is pending"
    )
    max_batch_age_s: float = Field(default=2.0, gt=0, description="Freshness bound")
    poll_timeout_ms: int = Field(default=500, ge=1)
    gc_gen0_threshold: int = Field(
        default=100_000,
        ge=0,
        description="Python's cyclic GC collects after this many new container objects (Python's own "
        "default: 700). Every fetched record makes some; at 700 the collections took up to a quarter of "
        "the lake lander's CPU in the runs measured (bench/landing.py --gc-gen0). 0 turns the cyclic GC off",
    )
    session_timeout_ms: int = Field(default=6_000, ge=6_000)
    fault_pause_before_commit_s: float = Field(
        default=0.0, ge=0, description="Fault injection for crash tests: pause between flush and commit"
    )
    fault_kill_at: FaultStep | None = Field(
        default=None,
        description="Fault injection for crash tests: SIGKILL the consumer at this step of its "
        "first flush with dead letters (after they are acknowledged; after the batch is durable)",
    )
    dlq_topic: str = Field(default=DLQ_TOPIC, description="Where poison records go")
    dlq_max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        ge=1024,
        description="Largest dead-letter record (lowered to the DLQ topic's max.message.bytes); "
        "a larger poison record is sent as a preview with its size and sha256",
    )
    dlq_retry_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long unacknowledged dead letters are retried before the consumer exits non-zero",
    )
    stuck_after_s: float = Field(
        default=60.0,
        gt=0,
        description="/healthz says stuck after this long without a commit while records wait",
    )
    alerts_topic: str = Field(
        default=ALERTS_TOPIC,
        description="Alerts: the fraud scorer and the drift monitor publish there; the lake group lands "
        "the drift episodes from there",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve Prometheus /metrics on this port (unset: off)"
    )
    # shared with the warehouse (its own settings class reads the same variable)
    postgres_dsn: str | None = Field(
        default=None, description="PostgreSQL DSN of the audit sink, e.g. postgresql://user@host:5432/db"
    )
    audit_schema: str = Field(default="public", description="PostgreSQL schema of the audit table")
    fraud_window_s: float = Field(default=60.0, gt=0, description="Sliding window of the request-rate score")
    fraud_rate_threshold: float = Field(default=50.0, gt=0, description="Requests per window that alert")
    fraud_zscore_threshold: float = Field(default=6.0, gt=0, description="Feature outlier |z| that alerts")
    fraud_transactions: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Alerts and offsets in one Kafka transaction (exactly once): auto = where the "
        "broker has transactions, else at least once; on = required; off = at least once",
    )
    fraud_transactional_id_prefix: str = Field(
        default="inferstream-fraud",
        min_length=1,
        description="Transactional ids are <prefix>.<group>.<digest of the assigned partitions>",
    )

    drift_window_events: int = Field(
        default=5_000, ge=10, description="Drift monitor: events per model version in the sliding window"
    )
    drift_min_events: int = Field(
        default=1_000, ge=10, description="Drift monitor: a window is evaluated once it holds this many"
    )
    drift_eval_interval_s: float = Field(
        default=5.0, gt=0, description="Drift monitor: seconds between evaluations of the windows"
    )
    drift_consecutive: int = Field(
        default=3, ge=1, description="Drift monitor: evaluations over (under) the threshold that open (close)"
    )
    drift_webhook_url: str | None = Field(
        default=None, description="Drift monitor: also POST each episode alert here (best effort)"
    )
    drift_alerts_read_back: int = Field(
        default=100_000,
        ge=0,
        description="Drift monitor: records per alerts partition read at start to recover open episodes",
    )

    def require_postgres(self) -> str:
        from common.errors import ConfigError

        if not self.postgres_dsn:
            raise ConfigError(
                "INFERSTREAM_POSTGRES_DSN is not set: point it at the PostgreSQL database of the audit table"
            )
        return self.postgres_dsn
