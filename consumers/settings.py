"""Settings of the streaming shell (broker, store, routing, stage behaviour), read once at start.

Environment variables use the prefix ``IG_`` (``IG_KAFKA_BOOTSTRAP``…); ``DATABASE_URL`` is read
as is, the convention every PostgreSQL host understands. Nothing else in ``consumers/`` reads
``os.environ``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsumerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_", frozen=True, extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port] of the Kafka cluster")
    app_id: str = Field("impression-gateway", description="Kafka consumer group / faust app id")
    topic_partitions: int = Field(4, description="Partitions of the topics this app creates")
    topic_replication: int = Field(1, description="Replication factor of created topics (3 in production)")
    database_url: str = Field(
        "sqlite:///.data/impression-gateway.db",
        validation_alias=AliasChoices("DATABASE_URL", "IG_DATABASE_URL", "database_url"),
    )
    routing_table: Path | None = Field(None, description="Site routing table (TOML); default model/inference/routes.toml")
    infer_concurrency: int = Field(4, description="Drafts requested from the model worker at once")
    park_backoff_s: float = Field(2.0, description="First delay before a parked request is retried")
    park_backoff_max_s: float = Field(60.0, description="Longest delay between retries of a parked request")
    post_retries: int = Field(5, description="Attempts to post one draft before it is dead-lettered")
    retrieval_fallback: bool = Field(True, description="Draft with the retrieval drafter while the model worker is down")
    retrieval_index_limit: int = Field(50_000, description="Most recent signed reports indexed at start")
    log_level: str = "info"
