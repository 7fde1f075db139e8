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
    infer_early: bool = Field(True, description="a request this process routed is drafted at once when this "
                              "process holds its partition and an infer slot is free, one Kafka hop sooner; the infer "
                              "agent joins it (README \"Draft-path overhead\")")
    normalise_early: bool = Field(True, description="with both roles in one process, a report the gateway took is "
                                  "normalised at once when this process holds its partition and normalised the records "
                                  "before it, one Kafka hop sooner; the normalise agent joins it (README \"Draft-path "
                                  "overhead\")")
    post_concurrency: int = Field(1, ge=1, description="drafts the post stage handles at once (different "
                                  "accessions; one accession's always in order); above 1 its records are acked by "
                                  "hand and their offsets committed later (README \"Draft-path overhead\")")
    post_inline: bool = Field(True, description="infer claims and sends each draft it may post itself, one Kafka "
                              "hop sooner than the post agent (which then only checks the claim); false: the post "
                              "agent posts every draft (README \"Draft-path overhead\")")
    capture_batch: int = Field(200, ge=1, description="most signed reports the capture stage takes per store "
                               "transaction (a poll batch)")
    capture_batch_wait_s: float = Field(0.25, gt=0, description="longest the capture stage waits for a batch to "
                                        "fill before it takes what came")
    park_backoff_s: float = Field(2.0, description="first delay before a parked request is retried")
    park_backoff_max_s: float = Field(60.0, description="longest delay between retries of a parked request")
    retrieval_fallback: bool = Field(True, description="draft with the retrieval drafter while the model worker is down")
    retrieval_index_limit: int = Field(50_000, description="most recent signed reports indexed at start")
    retrieval_threshold: float | None = Field(None, description="similarity (0-1) the retrieval drafter needs to "
                                              "draft; unset = calibrated per route from its own index")
    # Recovery after a consumer dies (README "Guarantees": back within 30 s). The coordinator drops a dead member
    # after the session timeout, then waits up to the rebalance timeout for the live ones to rejoin.
    consumer_session_timeout_s: float = Field(10.0, description="a consumer silent this long is dropped from the "
                                              "group and its partitions reassigned")
    consumer_heartbeat_interval_s: float = Field(1.0, description="how often a consumer heartbeats (at most a third "
                                                 "of the session timeout)")
    consumer_rebalance_timeout_s: float = Field(15.0, description="how long a rebalance waits for live members to "
                                                "rejoin")
    broker_request_timeout_s: float = Field(30.0, description="Kafka request timeout of the consumers (above the "
                                            "session and rebalance timeouts: a JoinGroup waits for the rebalance)")
    consumer_fetch_max_wait_ms: int = Field(5, ge=1, le=1500, description="longest a fetch waits for records "
                                            "(faust fixes 1500; a broker that holds a fetch that long adds it to "
                                            "every hop of the draft path: consumers/app.py)")
    # Drafts outlast outages (README "Guarantees"): each destination's deliveries are retried with capped exponential
    # backoff (with jitter) for the window, then dead-lettered; parked requests wait for a drafter as long.
    delivery_retry_window_s: float = Field(43_200.0, description="seconds a draft is kept and retried while its "
                                           "destination is down or answers AE (or while no drafter can draft it) "
                                           "before it is dead-lettered")
    delivery_backoff_s: float = Field(1.0, description="first delay before a failed delivery is tried again")
    delivery_backoff_max_s: float = Field(300.0, description="longest delay between tries of a delivery (and "
                                          "between probes of a destination that is down)")
    replace_retrieval_drafts: bool = Field(True, description="draft again with the model once it is back and "
                                           "replace a retrieval draft posted during its outage, while the study is "
                                           "unsigned")
    log_check_s: float = Field(1.0, description="seconds between looks for a partition whose log the broker lost "
                               "(its topic made again, its offsets gone back): read again from its start "
                               "(gateway/log_watch.py); 0 turns the look off")
    topic_check_s: float = Field(5.0, description="seconds between checks that every topic of the flow exists "
                                 "(re-created when a broker lost them)")
