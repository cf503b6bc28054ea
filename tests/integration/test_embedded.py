"""The embedded default: start, reuse, use, stop; nothing left running."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import psycopg
import pytest
import redis
from click.testing import CliRunner

from corec_tasks import services
from corec_tasks.cli import main
from corec_tasks.services import _pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def test_up_reuse_down(tmp_path: Path) -> None:
    data = tmp_path / "data"
    state = services.up(data)
    try:
        assert re.fullmatch(r"redis://:[\w-]{40,}@127\.0\.0\.1:\d+/0", state.redis_url)
        assert redis.Redis.from_url(state.redis_url).ping()
        # A password by default: without it Redis answers nothing but NOAUTH.
        port = state.redis_url.rsplit(":", 1)[1].split("/")[0]
        bare = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(redis.AuthenticationError):
            bare.ping()
        bare.close()
        for secret in (data / "redis" / "password", data / "services.json"):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        with psycopg.connect(state.database_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("corec",)
        # loopback / unix socket only
        assert "host=/" in state.database_url
        again = services.up(data)
        assert (again.redis_pid, again.postgres_pid) == (state.redis_pid, state.postgres_pid)
        info = services.status(data)
        assert info["redis"]["running"] and info["postgres"]["running"]  # type: ignore[index]
    finally:
        stopped = services.down(data)
    assert len(stopped) == 2
    assert not _pid_alive(state.redis_pid) and not _pid_alive(state.postgres_pid)
    assert services.status(data) == {"redis": None, "postgres": None}


def test_cli_prints_urls_to_export(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"COREC_DATA_DIR": str(tmp_path / "d")}
    try:
        res = runner.invoke(main, ["services", "up"], env=env)
        assert res.exit_code == 0, res.output
        assert "export REDIS_URL=" in res.output and "export DATABASE_URL=" in res.output
        st = runner.invoke(main, ["services", "status", "--json"], env=env)
        assert '"running": true' in st.output
    finally:
        down = runner.invoke(main, ["services", "down"], env=env)
    assert "redis" in down.output and "postgres" in down.output
    assert not any(p.name == "redis-server" for p in _children(os.getpid()))


def _children(pid: int) -> list[Path]:
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == pid]


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().split(")")[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1
