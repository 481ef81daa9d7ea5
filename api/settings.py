"""Settings of the inference API (one class; read only by the entry point)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr

from api.auth import ApiKeySpec
from common.settings import CommonSettings


class ApiSettings(CommonSettings):
    model_name: str = Field(default="car-loan", description="Model served")
    model_version: str = Field(default="latest", description="Version served, or 'latest'")
    host: str = "127.0.0.1"
    port: int = 8000
    queue_size: int = Field(default=100_000, ge=1, description="Events buffered in memory")
    # measured with bench/api_overhead.py: linger 50 ms and batches up to 2000 cut the
    # publisher's CPU from ~18 to ~6 us an event at saturation (linger 20 ms, 500)
    batch_max_events: int = Field(default=2000, ge=1)
    linger_ms: int = Field(default=50, ge=0)
    compression: str | None = Field(default="zstd", description="zstd, lz4, gzip or none")
    kafka_acks: str = "all"
    kafka_client: str = Field(
        default="aiokafka", pattern="^(aiokafka|confluent)$", description="confluent: librdkafka (C)"
    )
    partitioning: str = Field(
        default="sticky", pattern="^(key|sticky)$", description="sticky: each batch to one partition"
    )
    kafka_enable_idempotence: bool = Field(
        default=True,
        description="Kafka's idempotent producer (retries never duplicate); false for the embedded "
        "Tansu broker, which has none",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    max_abs_feature_value: float = Field(
        default=1e12, gt=0, description="numbers beyond ±this get a 422 (they overflow the model)"
    )
    fast_inference: bool = Field(
        default=True, description="numpy path for the trained pipeline's shape; sklearn otherwise"
    )
    # delivery and the disk spool
    spool_dir: Path | None = Field(default=None, description="default: <data_dir>/spool")
    spool_max_bytes: int = Field(default=1 << 30, ge=1, description="cap; beyond it events are dropped")
    spool_segment_bytes: int = Field(default=8 << 20, ge=4096)
    spool_fsync_interval_ms: int = Field(
        default=200, ge=1, description="bounds what a crash loses from the spool"
    )
    send_timeout_s: float = Field(
        default=10.0, gt=0, description="a batch unacknowledged this long is spooled"
    )
    probe_interval_s: float = Field(
        default=1.0, gt=0, description="first retry of an unreachable broker; doubles with each failure"
    )
    probe_max_interval_s: float = Field(
        default=10.0, gt=0, description="cap of the retry interval while the broker stays unreachable"
    )
    broker_stall_s: float = Field(
        default=1.5,
        gt=0,
        description="a batch unacknowledged this long means the broker is hung: events go to "
        "the spool from then on, /readyz says broker_connected false",
    )
    durable: bool = Field(
        default=False,
        description="each event is written to the spool and fsynced (group commit) before the "
        "answer: a SIGKILL loses nothing answered; costs latency (see api/README.md)",
    )
    drain_timeout_s: float = Field(default=10.0, ge=0, description="at shutdown; the rest is spooled")

    # request surface
    auth_enabled: bool = Field(
        default=True, description="API keys required; INFERSTREAM_AUTH_ENABLED=false for local demos only"
    )
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list,
        description='JSON: [{"name": "...", "sha256": "<hex>", "roles": ["predict", "feedback"]}]',
    )
    rate_limit_per_key: float = Field(
        default=0.0, ge=0, description="predictions/s per API key (a batch costs one per item); 0 = off"
    )
    metrics_access: str = Field(
        default="key",
        pattern="^(key|open)$",
        description="with auth on, 'key': /metrics needs a key with the 'metrics' role; 'open': anyone",
    )
    docs_access: str = Field(
        default="key",
        pattern="^(key|open|off)$",
        description="with auth on, 'key': /openapi.json needs a key with the 'predict' role and "
        "/docs, /redoc are not served; 'open': all three open; 'off': none served (auth on or off)",
    )
    batch_max_items: int = Field(default=100, ge=1, le=10_000)
    synthetic_header: str = Field(default="X-Inferstream-Synthetic", description="'true' flags synthetic")
    # what is published
    sample_rates: dict[str, float] = Field(
        default_factory=dict, description='JSON {"<model name>": 0.1}; models not listed keep everything'
    )
    max_event_bytes: int = Field(default=900_000, ge=1024, description="over it, features become a digest")
    pii_fields: list[str] = Field(default_factory=list, description="features published as keyed HMACs")
    pii_hmac_key: SecretStr | None = Field(default=None, description="HMAC key for pii_fields")
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="prometheus_client's multiprocess directory; set by `inferstream api --workers N`",
    )

    @property
    def spool_root(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"
