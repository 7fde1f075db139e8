"""Settings of the streaming shell (broker, store, routing, stage behaviour), read once at start.

Environment variables use the prefix ``IG_`` (``IG_KAFKA_BOOTSTRAP``…); ``DATABASE_URL`` is read
as is, the convention every PostgreSQL host understands. Nothing else in ``consumers/`` reads
``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["all", "gateway", "consumers"]


class ConsumerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_", frozen=True, extra="ignore", populate_by_name=True)

    role: Role = Field("all", description="run the edge (MLLP + HTTP), the stream consumers, or both")
    embedded: bool = Field(False, description="start the Tansu broker, a SQLite store and the local vLLM worker "
                           "when none is configured")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers host:port[,host:port]")
    app_id: str = Field("impression-gateway", description="Kafka consumer group / faust app id")
    topic_partitions: int = Field(4, description="partitions of the topics this app creates")
    topic_replication: int = Field(1, description="replication factor of created topics (3 in production)")
    database_url: str = Field(
        "sqlite:///.data/impression-gateway.db",
        validation_alias=AliasChoices("DATABASE_URL", "IG_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL of the store of drafts and edit records",
    )
    routing_table: Path | None = Field(None, description="site routing table (TOML)")
    infer_concurrency: int = Field(4, description="drafts requested from the model worker at once")
    park_backoff_s: float = Field(2.0, description="first delay before a parked request is retried")
    park_backoff_max_s: float = Field(60.0, description="longest delay between retries of a parked request")
    retrieval_fallback: bool = Field(True, description="draft with the retrieval drafter while the model worker is down")
    retrieval_index_limit: int = Field(50_000, description="most recent signed reports indexed at start")
