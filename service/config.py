"""Settings from the environment (prefix SMECREDIT_), with defaults that run locally and refuse production."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-change-me"  # noqa: S105 - a placeholder that production refuses
DEV_DATA_KEYS = "dev:" + "ZGV2LW9ubHktZGF0YS1rZXktY2hhbmdlLW1lLTAwMDA="  # 32 bytes, public: production refuses it


class Environment(StrEnum):
    local = "local"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMECREDIT_", extra="ignore")

    environment: Environment = Environment.local
    database_url: str = Field("sqlite:///data/smecredit.db",
                              validation_alias=AliasChoices("SMECREDIT_DATABASE_URL", "DATABASE_URL"))
    registry: Path = Path("models")
    policies_dir: Path | None = None  # tenant policies <name>.yaml; None: the shipped default only
    pseudonym_key: SecretStr = SecretStr(DEV_SECRET)  # keyed HMAC of enterprise ids
    data_keys: SecretStr = SecretStr(DEV_DATA_KEYS)  # AES-256-GCM keyring for raw data at rest (service/crypto.py)
    raw_retention_days: int = Field(180, ge=1)  # encrypted raw request data is deleted after this
    public_base_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_batch: int = Field(100, ge=1, le=10_000)
    rate_limit_per_minute: int = Field(1200, ge=1)  # per API key
    auth_failures_per_minute: int = Field(20, ge=1)  # per client address: missing or invalid keys and tokens
    pages_per_minute: int = Field(60, ge=1)  # per client address: the public explanation pages
    redis_url: str | None = None  # set for several replicas: rate limits and key revocations shared through Redis
    # Authenticated keys are cached per process for this long: a revoked key is refused on every replica at once
    # with Redis, otherwise at the latest this many seconds after `keys revoke`. 0: look up every request.
    key_cache_seconds: float = Field(5.0, ge=0, le=300)
    # The HTTP edge of each worker process (service/edge.py), applied by `smecredit serve`:
    max_header_bytes: int = Field(16_384, ge=1024)  # request line and headers; larger gets 431
    header_timeout_seconds: float = Field(10.0, gt=0)  # from connection (or first byte) to the end of the head
    body_timeout_seconds: float = Field(30.0, gt=0)  # from the end of the head to the end of the body
    max_connections: int = Field(1000, ge=1)  # open connections per worker; beyond: 503 and closed
    max_in_flight: int = Field(100, ge=1)  # requests being handled per worker; beyond: 503 (/healthz exempt)
    metrics_token: SecretStr | None = None  # when set, /metrics and /readyz details need 'Bearer <token>'
    explanation_ttl_hours: int = Field(24 * 30, ge=1)
    docs_enabled: bool = True
    model_check_seconds: float = 1.0  # how often a replica looks for a new champion and changed policy files
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] | None = None  # None: JSON lines in production, text elsewhere
    tracing_endpoint: str | None = None  # OTLP/HTTP traces endpoint (extra `tracing`); None: no tracing

    @property
    def log_format_in_effect(self) -> str:
        return self.log_format or ("json" if self.environment == Environment.production else "text")

    @model_validator(mode="after")
    def _safe_in_production(self) -> Settings:
        if self.environment == Environment.production:
            problems = []
            if self.database_url.startswith("sqlite"):
                problems.append("DATABASE_URL must be PostgreSQL, not SQLite")
            if self.pseudonym_key.get_secret_value() == DEV_SECRET or len(self.pseudonym_key.get_secret_value()) < 32:
                problems.append("SMECREDIT_PSEUDONYM_KEY must be set to a secret of 32 characters or more")
            if self.data_keys.get_secret_value() == DEV_DATA_KEYS:
                problems.append("SMECREDIT_DATA_KEYS must be set to a secret keyring")
            if not self.public_base_url.startswith("https://") or "127.0.0.1" in self.public_base_url \
                    or "localhost" in self.public_base_url:
                problems.append("SMECREDIT_PUBLIC_BASE_URL must be the public https address (links go to applicants)")
            if self.docs_enabled:
                problems.append("SMECREDIT_DOCS_ENABLED must be false (no public API docs)")
            if self.metrics_token is None or len(self.metrics_token.get_secret_value()) < 16:
                problems.append("SMECREDIT_METRICS_TOKEN must be set (16+ characters): /metrics and /readyz "
                                "details reveal decision counts and model versions")
            if problems:
                raise ValueError("unsafe production settings: " + "; ".join(problems))
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
