"""Settings for every ievents process, read from ``IEVENTS_*`` environment variables.

The defaults describe the embedded stack (a broker subprocess, chDB on a data
folder under ``./data``); production only changes values, never code paths:
set ``IEVENTS_KAFKA_BOOTSTRAP``, ``IEVENTS_SCHEMA_REGISTRY_URL`` and
``IEVENTS_CLICKHOUSE_URL=http://...`` and the same processes talk to Apache
Kafka, a Schema Registry and a ClickHouse server.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IEVENTS_", extra="ignore")

    data_dir: Path = Path("data")

    # Kafka. Empty bootstrap means "start the embedded broker" for `ievents up`
    # and `ievents demo`; the stream worker and sink always need an address.
    kafka_bootstrap: str = ""
    topic_raw: str = "integration-events.raw"
    topic_enriched: str = "integration-events.enriched"
    topic_dlq: str = "integration-events.dlq"
    topic_partitions: int = 4
    schema_registry_url: str = ""

    # Every process serves Prometheus metrics on <metrics_host>:<its port> (0.0.0.0 in containers).
    metrics_host: str = "127.0.0.1"
    # The producer SDK's metrics server (`ievents simulate`); 0 = none (a host application exports them itself).
    producer_metrics_port: int = 0

    # Stream worker (Faust).
    stream_app_id: str = "ievents-stream"
    stream_batch_size: int = 2000
    stream_batch_seconds: float = 0.2
    stream_metrics_port: int = 9101
    stream_max_message_bytes: int = 1_000_000
    stream_max_future_seconds: float = 86_400
    stream_window_seconds: int = 60

    # Sink.
    sink_group: str = "ievents-sink"
    sink_batch_rows: int = 10_000
    sink_batch_seconds: float = 1.0
    # `ievents sink` serves /metrics here; in `ievents up` / `ievents serve` the API's /metrics carries the sink's.
    sink_metrics_port: int = 9102

    # ClickHouse: chdb:///absolute/path (embedded) or http://host:8123 (server).
    clickhouse_url: str = ""
    clickhouse_database: str = "ievents"
    # Days events (and their rollups) are kept; 0 keeps them forever. Applied by migrate().
    retention_days: int = 365

    # Query API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str = ""
    # Bearer key for POST /api/v1/sql (read-only SQL); empty turns that route off (`ievents up` generates one).
    # Access: the operator key sees every account; each API key sees one account ({"<key>": "<account_id>"}).
    # Empty operator key: `ievents up` generates one into <data_dir>/operator.key for the local CLI.
    operator_key: str = ""
    api_keys: dict[str, str] = {}
    # The key the CLI presents to the API (default: the operator key).
    api_key: str = ""

    @cached_property
    def clickhouse_dsn(self) -> str:
        """The ClickHouse DSN, defaulting to chDB in ``<data_dir>/clickhouse``."""
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def operator_key_file(self) -> Path:
        return self.data_dir / "operator.key"

    def resolved_operator_key(self) -> str:
        """The configured operator key, else the one ``ievents up`` generated for this data folder."""
        if self.operator_key:
            return self.operator_key
        try:
            return self.operator_key_file.read_text().strip()
        except OSError:
            return ""

    @property
    def api_base_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def stream_counts_topic(self) -> str:
        """Per-batch (integration, status) counts, keyed by integration so one worker owns each integration."""
        return f"{self.stream_app_id}-status-counts"

    @property
    def stream_table_changelog(self) -> str:
        """Faust's changelog of the windowed counts table (named by Faust's convention)."""
        return f"{self.stream_app_id}-integration_status_counts-changelog"

    @property
    def topics(self) -> list[str]:
        """Every topic the pipeline needs, created up front (the stream worker declares none itself)."""
        return [self.topic_raw, self.topic_enriched, self.topic_dlq, self.stream_counts_topic, self.stream_table_changelog]
