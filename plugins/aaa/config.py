"""The AAA plugin's options (seed 003 §1.3), validated once at construction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corec_tasks.errors import ConfigurationError
from corec_tasks.settings import Settings

PLUGIN = "aaa"


class AAAConfig(BaseModel):
    """Options of the AAA plugin. Durations are seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Lifetime of a login token and its session, in seconds (the seed says minutes).
    session_timeout: int = Field(3600, ge=1, le=30 * 86400)
    #: Consecutive failed logins that lock an account.
    max_login_attempts: int = Field(5, ge=1, le=1000)
    #: How long a lock lasts; 0 locks until an admin runs `corec users unlock`.
    lockout_s: int = Field(900, ge=0)
    min_password_length: int = Field(12, ge=1, le=1024)
    #: argon2id cost: iterations, memory in KiB, lanes (argon2-cffi's defaults, RFC 9106).
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost: int = Field(65536, ge=8)
    argon2_parallelism: int = Field(4, ge=1, le=64)
    #: Password hashes (logins, password changes) running at once in one process; each
    #: takes argon2_memory_cost KiB. Beyond it a login waits up to hash_wait_s, then 503.
    max_concurrent_hashes: int = Field(2, ge=1, le=64)
    hash_wait_s: float = Field(5.0, ge=0, le=120)
    #: Login attempts one client address may make per login_window_s (then HTTP 429).
    login_per_client: int = Field(10, ge=1, le=100_000)
    login_window_s: int = Field(60, ge=1, le=86_400)
    #: ``iss`` of the tokens; a token from another issuer is refused.
    issuer: str = Field("corec", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_secret_in_config(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "token_secret" in data:
            raise ValueError(
                "token_secret is not read from config files; set COREC_JWT_SECRET in the "
                "environment instead"
            )
        return data

    @model_validator(mode="after")
    def _argon2_memory(self) -> AAAConfig:
        if self.argon2_memory_cost < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_cost must be at least 8 x argon2_parallelism (KiB)")
        return self


def load_config(config: Mapping[str, Any] | AAAConfig | None) -> AAAConfig:
    """Validate ``config`` (a dict, as the seed's plugins receive it); errors name the key."""
    if isinstance(config, AAAConfig):
        return config
    try:
        return AAAConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        problems = [
            (".".join(["plugins", PLUGIN, *map(str, e["loc"])]), e["msg"]) for e in exc.errors()
        ]
        raise ConfigurationError(problems, f"{PLUGIN} plugin config") from None


def config_from_settings(settings: Settings) -> AAAConfig:
    """The options of the ``aaa`` entry of corec_config.json's ``plugins``, else defaults."""
    path = settings.plugin_config_file(PLUGIN)
    if path is None:
        return AAAConfig()
    try:
        return load_config(json.loads(path.read_text()))
    except ValueError as exc:  # malformed JSON
        raise ConfigurationError([(f"plugins.{PLUGIN}.config_path", f"{path}: {exc}")]) from None
