"""Settings base shared by every service.

Only entry points (the app factory's caller, the CLI, a flow) instantiate settings;
library code receives explicit values. Every field is read from an environment
variable ``INFERSTREAM_<FIELD>``, except the broker address, which is the
conventional ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.events import EVENTS_TOPIC, FEEDBACK_TOPIC


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

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

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
        return self.kafka_bootstrap_servers
