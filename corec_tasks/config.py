"""The ``corec_config.json`` file format (seed 004 §6.1), validated with pydantic.

Keys keep the seed's Spanish names because users write them. Unknown keys are
errors, so a typo is named instead of silently ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from corec_tasks.errors import ConfigurationError

#: The seed's five priority channels; blocks may use any channel 1..255 on the wire.
CHANNEL_QUEUES: dict[int, str] = {
    1: "generic",
    2: "security",
    3: "analysis",
    4: "alerts",
    5: "generation",
}

#: Celery's default queue: where a plain client's ``send_task`` lands; workers serve it too.
CELERY_DEFAULT_QUEUE = "celery"


def queue_for_channel(channel: int) -> str:
    """Celery queue serving a channel; channels past the seed's five share ``generic``."""
    return CHANNEL_QUEUES.get(channel, CHANNEL_QUEUES[1])


#: What a block's ``stream`` may be called (an unprefixed stream name).
STREAM_NAME = r"^[A-Za-z0-9_.:-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _floor_fits(value: int, info: ValidationInfo) -> int:
    """``min_entidades`` no larger than a block's configured size: a floor above it
    could never be kept, so it is a mistake, said with its key."""
    per = info.data.get("entidades_por_bloque")
    if isinstance(per, int) and value > per:
        raise ValueError(f"must be at most entidades_por_bloque ({per}), got {value}")
    return value


class AutoRepair(_Strict):
    """Self-repair thresholds of a block (``autoreparacion``)."""

    max_errores: float = Field(0.05, ge=0.0, le=1.0)
    min_fitness: float = Field(0.2, ge=0.0, le=1.0)


class BlockConfig(_Strict):
    """A symbiotic block from the ``bloques`` list."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    canal: int = Field(ge=1, le=255)
    entidades: int = Field(ge=1, le=10_000_000)
    max_size_mb: float = Field(1.0, gt=0)
    entidades_por_bloque: int = Field(1000, ge=1, le=1_000_000)
    autoreparacion: AutoRepair = AutoRepair()
    carga: float = Field(1.0, ge=0.0, le=1.0)
    procesador: str | None = None
    intervalo_s: float = Field(300.0, gt=0)
    #: A stream whose entries feed the block's entities (payload entities), e.g.
    #: ``"market_data"``; None: no-input entities.
    stream: str | None = Field(None, min_length=1, max_length=64, pattern=STREAM_NAME)
    #: Redirection never takes a block of this group below this many entities (a
    #: stream-fed block that must keep up with a burst, like the capital intake).
    min_entidades: int = Field(1, ge=1, le=1_000_000)

    _min_fits = field_validator("min_entidades")(_floor_fits)


class PluginBlockConfig(_Strict):
    """The block a plugin contributes (its ``bloque``)."""

    bloque_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    canal: int = Field(ge=1, le=255)
    entidades: int = Field(ge=1, le=10_000_000)
    max_size_mb: float = Field(1.0, gt=0)
    entidades_por_bloque: int = Field(1000, ge=1, le=1_000_000)
    max_errores: float = Field(0.05, ge=0.0, le=1.0)
    min_fitness: float = Field(0.2, ge=0.0, le=1.0)
    carga: float = Field(1.0, ge=0.0, le=1.0)
    procesador: str | None = None
    intervalo_s: float = Field(300.0, gt=0)
    stream: str | None = Field(None, min_length=1, max_length=64, pattern=STREAM_NAME)
    min_entidades: int = Field(1, ge=1, le=1_000_000)

    _min_fits = field_validator("min_entidades")(_floor_fits)

    def as_block(self) -> BlockConfig:
        """The same block in the ``bloques`` shape."""
        return BlockConfig(
            id=self.bloque_id,
            canal=self.canal,
            entidades=self.entidades,
            max_size_mb=self.max_size_mb,
            entidades_por_bloque=self.entidades_por_bloque,
            autoreparacion=AutoRepair(max_errores=self.max_errores, min_fitness=self.min_fitness),
            carga=self.carga,
            procesador=self.procesador,
            intervalo_s=self.intervalo_s,
            stream=self.stream,
            min_entidades=self.min_entidades,
        )


class PluginConfig(_Strict):
    """An entry of ``plugins``."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    enabled: bool = True
    config_path: str | None = None
    bloque: PluginBlockConfig | None = None


class DbConfig(_Strict):
    """The seed's ``db_config`` dict; used only when ``DATABASE_URL`` is unset."""

    dbname: str
    user: str = "postgres"
    password: str | None = None
    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)

    def url(self) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.dbname, safe='')}"


class RedisConfig(_Strict):
    """The seed's ``redis_config`` dict; used only when ``REDIS_URL`` is unset."""

    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    db: int = Field(0, ge=0, le=15)

    def url(self) -> str:
        auth = ""
        if self.username or self.password:
            auth = quote(self.username or "", safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


class CorecConfig(_Strict):
    """The whole ``corec_config.json``."""

    instance_id: str = Field("corec1", min_length=1, max_length=64)
    db_config: DbConfig | None = None
    redis_config: RedisConfig | None = None
    bloques: list[BlockConfig] = []
    plugins: list[PluginConfig] = []

    @model_validator(mode="after")
    def _unique_block_ids(self) -> CorecConfig:
        seen: set[str] = set()
        for block in self.all_blocks():
            if block.id in seen:
                raise ValueError(f"block id {block.id!r} is used twice")
            seen.add(block.id)
        names = [p.name for p in self.plugins]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"plugin name(s) used twice: {', '.join(dupes)}")
        return self

    def all_blocks(self) -> list[BlockConfig]:
        """Global blocks, then the block of each enabled plugin."""
        blocks = list(self.bloques)
        blocks += [p.bloque.as_block() for p in self.plugins if p.enabled and p.bloque]
        return blocks

    @property
    def total_entities(self) -> int:
        return sum(b.entidades for b in self.all_blocks())


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def parse_config(data: Any, source: str = "corec_config.json") -> CorecConfig:
    """Validate parsed JSON; raise ConfigurationError naming every bad key."""
    try:
        return CorecConfig.model_validate(data)
    except ValidationError as exc:
        problems = [(_key_path(err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigurationError(problems, source) from None


def load_config(path: str | Path, *, check_plugin_paths: bool = True) -> CorecConfig:
    """Read and validate a config file; also check each enabled plugin's files exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = ("(file)", f"cannot read {path}: {exc.strerror}")
        raise ConfigurationError([problem], str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        problem = ("(file)", f"not valid JSON at {where}: {exc.msg}")
        raise ConfigurationError([problem], str(path)) from None
    config = parse_config(data, str(path))
    if check_plugin_paths:
        # Relative plugin paths resolve against the config file's folder or the cwd.
        bases = [path.resolve().parent, Path.cwd()]
        problems = []
        for i, plugin in enumerate(config.plugins):
            cfg = plugin.config_path
            if plugin.enabled and cfg and not any((b / cfg).is_file() for b in bases):
                problems.append(
                    (f"plugins[{i}].config_path", f"file not found: {plugin.config_path}")
                )
        if problems:
            raise ConfigurationError(problems, str(path))
    return config
