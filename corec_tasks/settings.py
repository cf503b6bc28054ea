"""One typed settings object, parsed once at the edge from environment + config file.

Precedence for each server URL: the environment (``REDIS_URL`` / ``DATABASE_URL``),
then the config file's ``redis_config`` / ``db_config``, then the embedded servers
that ``corec services up`` started under the data directory.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from corec_tasks.config import CorecConfig, load_config
from corec_tasks.errors import ConfigurationError, ServiceError

EMBEDDED_STATE = "services.json"


class Env(BaseSettings):
    """Everything read from the environment. Secrets live only here."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    config_path: Path = Field(Path("corec_config.json"), alias="COREC_CONFIG")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    #: Redis Sentinel (high availability): ``host:port`` of each sentinel, comma-separated.
    #: Every CoreC client, the broker and the result backend then ask the sentinels for the
    #: master of ``COREC_REDIS_MASTER`` and follow a failover. REDIS_URL, if set, then gives
    #: only the password, user and database; its host is not used (no TLS with Sentinel).
    redis_sentinels: str = Field("", max_length=2000, alias="COREC_REDIS_SENTINELS")
    redis_master: str = Field("corec", pattern=r"^[A-Za-z0-9._-]{1,64}$",
                              alias="COREC_REDIS_MASTER")  # fmt: skip
    #: The sentinels' own password (``requirepass`` in sentinel.conf), if they have one.
    redis_sentinel_password: str | None = Field(None, max_length=512,
                                                alias="COREC_REDIS_SENTINEL_PASSWORD")  # fmt: skip
    #: Replicas that must hold a stream entry before its publish returns an id (Redis
    #: ``WAIT``): an acknowledged entry then survives the master's loss. Default: 1 with
    #: sentinels, else 0. A publish the replicas do not confirm in time fails.
    redis_wait_replicas: int | None = Field(None, ge=0, le=16, alias="COREC_REDIS_WAIT_REPLICAS")
    redis_wait_ms: int = Field(2000, ge=1, le=60_000, alias="COREC_REDIS_WAIT_MS")
    database_url: str | None = Field(None, alias="DATABASE_URL")
    #: A PostgreSQL replica for reads that may lag (statements); never the ledger's.
    database_read_url: str | None = Field(None, max_length=2000, alias="DATABASE_READ_URL")
    #: The tables' owner, for `corec db upgrade` only; default DATABASE_URL. The
    #: application (DATABASE_URL) then runs as a role that cannot bypass triggers.
    migrate_database_url: str | None = Field(None, alias="COREC_MIGRATE_DATABASE_URL")
    instance_id: str | None = Field(None, alias="CORE_INSTANCE_ID")
    data_dir: Path = Field(Path(".corec"), alias="COREC_DATA_DIR")
    #: Prefix for every Redis key CoreC and Celery write; tests use one per run.
    redis_prefix: str = Field("", alias="COREC_REDIS_PREFIX")
    #: Hard limit of the longest task.
    task_time_limit_s: int = Field(1800, ge=10, alias="COREC_TASK_TIME_LIMIT")
    #: Optional broker URL (``amqp://...`` for RabbitMQ, where a dead worker's tasks come
    #: back at once); Redis stays the result backend and everything else. Default: Redis.
    broker_url: str | None = Field(None, alias="COREC_BROKER_URL")
    #: Redis broker: seconds after which a delivered but unacknowledged task is handed to
    #: another worker unless its worker's heartbeat refreshed it (corec_tasks/unacked.py).
    #: Independent of the task time limit: a live worker keeps its tasks however long.
    visibility_timeout_s: int = Field(30, ge=3, alias="COREC_VISIBILITY_TIMEOUT")
    #: Seconds between a worker's refreshes of its unacknowledged tasks; default
    #: visibility_timeout_s / 4. At most a third of the visibility timeout.
    unacked_heartbeat_s: float | None = Field(None, gt=0, alias="COREC_UNACKED_HEARTBEAT_S")
    #: ``corec status`` reports a dispatched cycle with no finish record after this long.
    cycle_overdue_s: int = Field(900, ge=10, alias="COREC_CYCLE_OVERDUE_S")
    #: A cycle still missing blocks this long after dispatch, none of them running for
    #: a while, has those blocks sent again (corec_tasks/blocks/cycle.py:rescue_stalled): the
    #: Redis transport can lose a message a worker popped as it died. Default: the
    #: broker's own redelivery time (visibility timeout + restore sweep + heartbeat)
    #: plus 10 s, at least 60 s.
    cycle_rescue_after_s: int | None = Field(None, ge=5, le=86_400,
                                             alias="COREC_CYCLE_RESCUE_S")  # fmt: skip
    #: How often a worker sweeps for tasks whose worker died (older than the visibility
    #: timeout) and requeues them.
    restore_interval_s: int = Field(10, ge=1, le=3600, alias="COREC_RESTORE_INTERVAL_S")
    #: A task message signed longer ago than this is refused (corec_tasks/task_auth.py),
    #: and a finished task's id is remembered this long, so a copy of it is refused.
    task_max_age_s: int = Field(86_400, ge=60, le=30 * 86_400, alias="COREC_TASK_MAX_AGE_S")
    result_expires_s: int = Field(86_400, ge=60, alias="COREC_RESULT_EXPIRES")
    stream_maxlen: int = Field(100_000, ge=100, alias="COREC_STREAM_MAXLEN")
    stream_claim_idle_ms: int = Field(60_000, ge=100, alias="COREC_STREAM_CLAIM_IDLE_MS")
    stream_max_deliveries: int = Field(5, ge=1, alias="COREC_STREAM_MAX_DELIVERIES")
    stream_batch: int = Field(1000, ge=1, le=100_000, alias="COREC_STREAM_BATCH")
    #: How long a publish retries while Redis is unreachable (a restart) before it fails.
    publish_retry_s: float = Field(10.0, ge=0, le=600, alias="COREC_PUBLISH_RETRY_S")
    partitions_ahead: int = Field(3, ge=0, le=36, alias="COREC_PARTITIONS_AHEAD")
    block_chunk: int = Field(62, ge=1, le=10_000, alias="COREC_BLOCK_CHUNK")
    sync_every_s: float = Field(300.0, gt=0, alias="COREC_SYNC_EVERY_S")
    persist_every_s: float = Field(5.0, gt=0, le=3600, alias="COREC_PERSIST_EVERY_S")
    log_level: str = Field("INFO", alias="COREC_LOG_LEVEL")
    #: Folders holding plugin folders, ``os.pathsep``-separated (corec_tasks/discovery.py).
    plugin_path: str = Field("", max_length=10_000, alias="COREC_PLUGIN_PATH")
    #: Reverse proxies in front of the HTTP API whose ``X-Forwarded-For`` is believed:
    #: IPs or CIDRs, comma-separated. Empty (the default): the client is the TCP peer and
    #: the header is ignored, so nobody picks the address a login limit counts.
    trusted_proxies: str = Field("", max_length=10_000, alias="COREC_TRUSTED_PROXIES")
    #: Clients besides loopback that may read the HTTP API's own ``/metrics``: IPs or
    #: CIDRs, comma-separated (the client as ``COREC_TRUSTED_PROXIES`` resolves it).
    api_metrics_from: str = Field("", max_length=10_000, alias="COREC_API_METRICS_FROM")

    @property
    def heartbeat_s(self) -> float:
        """Seconds between refreshes of a worker's unacknowledged tasks."""
        return self.unacked_heartbeat_s or self.visibility_timeout_s / 4

    @property
    def redelivery_s(self) -> float:
        """Longest wait for a dead worker's task to come back through the broker."""
        return self.visibility_timeout_s + self.restore_interval_s + self.heartbeat_s

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinels' addresses from ``COREC_REDIS_SENTINELS`` (empty: no Sentinel)."""
        return parse_sentinels(self.redis_sentinels)

    @property
    def proxies(self) -> tuple[IPNetwork, ...]:
        """The networks of ``COREC_TRUSTED_PROXIES`` (empty: trust no proxy)."""
        return parse_networks(self.trusted_proxies, "COREC_TRUSTED_PROXIES")

    @property
    def metrics_readers(self) -> tuple[IPNetwork, ...]:
        """The networks of ``COREC_API_METRICS_FROM`` (empty: loopback only)."""
        return parse_networks(self.api_metrics_from, "COREC_API_METRICS_FROM")

    @property
    def wait_replicas(self) -> int:
        """Replicas a stream publish waits for (``COREC_REDIS_WAIT_REPLICAS``)."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.sentinels else 0

    @property
    def cycle_rescue_s(self) -> float:
        """Seconds after dispatch before a stalled cycle's missing blocks are sent again."""
        if self.cycle_rescue_after_s is not None:
            return float(self.cycle_rescue_after_s)
        return max(60.0, math.ceil(self.redelivery_s) + 10.0)


_HOST_PORT = re.compile(r"(?:\[([0-9A-Fa-f:.]{2,45})\]|([A-Za-z0-9.-]{1,253})):([0-9]{1,5})\Z")


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (``[v6]:port`` too) as pairs; ConfigurationError naming
    COREC_REDIS_SENTINELS for anything else."""
    if not text.strip(" "):
        return []
    out: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip(" ")
        match = _HOST_PORT.match(item)
        port = int(match.group(3)) if match else 0
        if not match or not 0 < port < 65536:
            shown = item if len(item) <= 60 else item[:60] + "..."
            problem = ("COREC_REDIS_SENTINELS", f"expected host:port[,host:port...], got {shown!r}")
            raise ConfigurationError([problem], "environment")
        out.append((match.group(1) or match.group(2), port))
    return out


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str, key: str) -> tuple[IPNetwork, ...]:
    """``1.2.3.4, 10.0.0.0/8, ::1`` as networks (an address is its own /32 or /128);
    ConfigurationError naming ``key`` for anything else (host bits set included: a
    typo in a mask must not widen the trust)."""
    out: list[IPNetwork] = []
    for item in text.split(","):
        item = item.strip(" ")
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            shown = item if len(item) <= 60 else item[:60] + "..."
            problem = (key, f"expected IPs or CIDRs, comma-separated; {shown!r}: {exc}")
            raise ConfigurationError([problem], "environment") from None
    return tuple(out)


class Settings:
    """Resolved settings: the env, the config file, and the server URLs to use."""

    def __init__(self, env: Env, config: CorecConfig, config_path: Path) -> None:
        self.env = env
        self.config = config
        self.config_path = config_path

    @property
    def instance_id(self) -> str:
        return self.env.instance_id or self.config.instance_id

    @property
    def data_dir(self) -> Path:
        return self.env.data_dir

    @property
    def redis_prefix(self) -> str:
        return self.env.redis_prefix

    def key(self, name: str) -> str:
        """A Redis key or stream name with this deployment's prefix."""
        return f"{self.env.redis_prefix}{name}"

    def plugin_config_file(self, name: str) -> Path | None:
        """The file named by plugin ``name``'s ``config_path``, relative to the config
        file's folder or else the working directory; None when the plugin has no entry
        or no config_path. A config_path that names no file is a ConfigurationError."""
        for entry in self.config.plugins:
            if entry.name == name and entry.config_path:
                for base in (self.config_path.resolve().parent, Path.cwd()):
                    if (base / entry.config_path).is_file():
                        return base / entry.config_path
                problem = (f"plugins.{name}.config_path", f"{entry.config_path} not found")
                raise ConfigurationError([problem])
        return None

    def embedded_state(self) -> dict[str, str]:
        path = self.data_dir / EMBEDDED_STATE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: str(v) for k, v in data.items()}

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return self.env.sentinels

    @property
    def redis_url(self) -> str:
        """The Redis URL Celery uses (broker and result backend). With sentinels, Celery's
        own form: ``sentinel://[:password@]host:port/db`` per sentinel, ``;``-separated."""
        if self.sentinels:
            parts = urlsplit(self.env.redis_url or "redis://")
            auth = parts.netloc.rpartition("@")[0]
            auth = f"{auth}@" if auth else ""
            db = parts.path.strip("/") or "0"
            return ";".join(f"sentinel://{auth}{_netloc(h, p)}/{db}" for h, p in self.sentinels)
        url = self.env.redis_url or (
            self.config.redis_config.url() if self.config.redis_config else None
        )
        url = url or self.embedded_state().get("redis_url")
        if not url:
            raise ServiceError(
                "no Redis configured: export REDIS_URL, or run `corec services up` "
                f"to start the embedded one under {self.data_dir}"
            )
        return url

    @property
    def database_url(self) -> str:
        url = self.env.database_url or (
            self.config.db_config.url() if self.config.db_config else None
        )
        url = url or self.embedded_state().get("database_url")
        if not url:
            raise ServiceError(
                "no PostgreSQL configured: export DATABASE_URL, or run `corec services up` "
                f"to start the embedded one under {self.data_dir}"
            )
        return url

    @property
    def read_database_url(self) -> str:
        """Where reads that may lag go (``DATABASE_READ_URL``, a replica), else
        ``database_url``. The ledger, and anything that decides on money, never reads
        here: a replica can be behind."""
        return self.env.database_read_url or self.database_url

    @property
    def migrate_database_url(self) -> str:
        """The owner's URL, which migrations use: COREC_MIGRATE_DATABASE_URL, else the
        embedded server's owner when DATABASE_URL is the embedded one, else DATABASE_URL."""
        if self.env.migrate_database_url:
            return self.env.migrate_database_url
        url = self.database_url
        state = self.embedded_state()
        if url == state.get("database_url") and state.get("owner_database_url"):
            return state["owner_database_url"]
        return url

    @property
    def uses_embedded(self) -> bool:
        return not (self.env.redis_url or self.config.redis_config or self.sentinels) or not (
            self.env.database_url or self.config.db_config
        )


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_env() -> Env:
    """Read the environment; a bad value raises ConfigurationError naming the variable."""
    try:
        env = Env()
    except ValidationError as exc:
        problems = [(str(e["loc"][0]), e["msg"]) for e in exc.errors()]
        raise ConfigurationError(problems, "environment") from None
    if env.visibility_timeout_s < 3 * env.heartbeat_s:
        problem = ("COREC_VISIBILITY_TIMEOUT", f"must be at least 3 x the unacked heartbeat "
                   f"({env.heartbeat_s:g} s), or a task still running on a live worker could "
                   "be delivered a second time")  # fmt: skip
        raise ConfigurationError([problem], "environment")
    if env.sentinels and (env.redis_url or "").startswith("rediss:"):
        problem = ("COREC_REDIS_SENTINELS", "TLS (rediss://) through Sentinel is not supported; "
                   "use Sentinel on a private network, or one Redis over TLS")  # fmt: skip
        raise ConfigurationError([problem], "environment")
    # Parsed now, so a bad list stops the process at start, naming its variable.
    parse_networks(env.trusted_proxies, "COREC_TRUSTED_PROXIES")
    parse_networks(env.api_metrics_from, "COREC_API_METRICS_FROM")
    rescue = env.cycle_rescue_after_s
    if rescue is not None and rescue <= env.redelivery_s:
        problem = ("COREC_CYCLE_RESCUE_S", f"must exceed the broker's redelivery time "
                   f"({env.redelivery_s:g} s: visibility timeout + restore interval + "
                   "heartbeat), or a rescue would race a dead worker's tasks coming back")
        raise ConfigurationError([problem], "environment")
    return env


def load_settings(config_path: str | Path | None = None) -> Settings:
    """Parse environment and config file into one Settings object."""
    env = load_env()
    path = Path(config_path) if config_path else env.config_path
    return Settings(env, load_config(path), path)
