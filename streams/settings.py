"""One frozen settings object, built from an environment mapping that is passed in.

Nothing here reads ``os.environ`` at import time; callers do
``Settings.from_env(os.environ)`` once, at the edge (the CLI), and pass the result down.
Secrets (SASL password, SSL key password) are never printed: ``repr`` masks them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import ConfigError

PIPELINE_VERSION = "docstreams-0.1.0"

_SECRET_KEYS = ("sasl.password", "ssl.key.password")

# Environment variables passed through to every Kafka client, for SASL/SSL clusters.
_KAFKA_PASSTHROUGH = {
    "DOCSTREAMS_SECURITY_PROTOCOL": "security.protocol",
    "DOCSTREAMS_SASL_MECHANISM": "sasl.mechanism",
    "DOCSTREAMS_SASL_USERNAME": "sasl.username",
    "DOCSTREAMS_SASL_PASSWORD": "sasl.password",
    "DOCSTREAMS_SSL_CA_LOCATION": "ssl.ca.location",
    "DOCSTREAMS_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "DOCSTREAMS_SSL_KEY_LOCATION": "ssl.key.location",
    "DOCSTREAMS_SSL_KEY_PASSWORD": "ssl.key.password",
}


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Thresholds:
    """Routing thresholds: a field below ``review_below`` sends the document to review."""

    review_below: float = 0.75
    classify_below: float = 0.5


@dataclass(frozen=True)
class Settings:
    home: Path
    bootstrap: str | None
    kafka_extra: Mapping[str, str] = field(default_factory=dict)
    topic_prefix: str = ""
    partitions: int = 6
    replication: int = 1
    batch_max_docs: int = 20
    batch_max_seconds: float = 5.0
    transaction_timeout_ms: int = 60_000
    # librdkafka timeout of each transactional call, and the watchdog on top of it: a
    # call still blocked txn_call_timeout_s + txn_call_grace_s later is declared stuck.
    txn_call_timeout_s: float = 30.0
    txn_call_grace_s: float = 15.0
    parse_workers: int = 2
    parse_timeout_s: float = 30.0
    parse_memory_mb: int = 2048
    max_attempts: int = 3
    retry_backoff_s: float = 1.0
    thresholds: Thresholds = Thresholds()
    sink_dsn: str | None = None
    allow_fault_injection: bool = False
    fault_at: str | None = None
    kafka_log_level: int = 3
    pipeline_version: str = PIPELINE_VERSION

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, home: Path | None = None) -> Settings:
        """Build settings from an environment mapping (``os.environ`` at the CLI edge)."""
        root = Path(env.get("DOCSTREAMS_HOME") or home or Path.cwd() / ".docstreams")
        extra = {kafka: env[var] for var, kafka in _KAFKA_PASSTHROUGH.items() if env.get(var)}
        settings = cls(
            home=root.resolve(),
            bootstrap=env.get("DOCSTREAMS_BOOTSTRAP") or None,
            kafka_extra=extra,
            topic_prefix=env.get("DOCSTREAMS_TOPIC_PREFIX", ""),
            partitions=_int(env, "DOCSTREAMS_PARTITIONS", 6, minimum=1),
            replication=_int(env, "DOCSTREAMS_REPLICATION", 1, minimum=1),
            batch_max_docs=_int(env, "DOCSTREAMS_BATCH_MAX_DOCS", 20, minimum=1),
            batch_max_seconds=_float(env, "DOCSTREAMS_BATCH_MAX_SECONDS", 5.0, minimum=0.1),
            transaction_timeout_ms=_int(env, "DOCSTREAMS_TRANSACTION_TIMEOUT_MS", 60_000, 1000),
            txn_call_timeout_s=_float(env, "DOCSTREAMS_TXN_CALL_TIMEOUT_S", 30.0, minimum=1.0),
            txn_call_grace_s=_float(env, "DOCSTREAMS_TXN_CALL_GRACE_S", 15.0, minimum=1.0),
            parse_workers=_int(env, "DOCSTREAMS_PARSE_WORKERS", 2, minimum=1),
            parse_timeout_s=_float(env, "DOCSTREAMS_PARSE_TIMEOUT_S", 30.0, minimum=0.1),
            parse_memory_mb=_int(env, "DOCSTREAMS_PARSE_MEMORY_MB", 2048, minimum=384),
            max_attempts=_int(env, "DOCSTREAMS_MAX_ATTEMPTS", 3, minimum=1),
            retry_backoff_s=_float(env, "DOCSTREAMS_RETRY_BACKOFF_S", 1.0),
            thresholds=Thresholds(
                review_below=_float(env, "DOCSTREAMS_REVIEW_BELOW", 0.75),
                classify_below=_float(env, "DOCSTREAMS_CLASSIFY_BELOW", 0.5),
            ),
            sink_dsn=env.get("DOCSTREAMS_SINK_DSN") or None,
            # Test-only: lets documents ask the parse pool to hang or crash on purpose.
            allow_fault_injection=env.get("DOCSTREAMS_ALLOW_FAULT_INJECTION") == "1",
            fault_at=env.get("DOCSTREAMS_FAULT_AT") or None,
            kafka_log_level=_int(env, "DOCSTREAMS_KAFKA_LOG_LEVEL", 3, minimum=0),
        )
        if settings.batch_max_seconds * 1000 >= settings.transaction_timeout_ms / 2:
            raise ConfigError(
                "DOCSTREAMS_BATCH_MAX_SECONDS must stay well below the transaction timeout "
                f"({settings.transaction_timeout_ms} ms); lower it or raise "
                "DOCSTREAMS_TRANSACTION_TIMEOUT_MS"
            )
        return settings

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    # Paths under the home directory -------------------------------------------------
    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def out_dir(self) -> Path:
        return self.home / "out"

    @property
    def sink_path(self) -> Path:
        return self.home / "decisions.sqlite"

    def kafka_common(self, bootstrap: str) -> dict[str, Any]:
        """Client settings shared by every producer, consumer and admin client."""
        return {"bootstrap.servers": bootstrap, "log_level": self.kafka_log_level,
                **self.kafka_extra}

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_KEYS else v) for k, v in self.kafka_extra.items()}
        return (
            f"Settings(home={str(self.home)!r}, bootstrap={self.bootstrap!r}, "
            f"kafka_extra={shown!r}, partitions={self.partitions}, "
            f"replication={self.replication}, pipeline_version={self.pipeline_version!r})"
        )
