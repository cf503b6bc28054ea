"""`corec users` as an operator types it, on PostgreSQL and on SQLite."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from corec_tasks.cli import main
from plugins.aaa.errors import AuthenticationError, TokenRevokedError
from plugins.aaa.service import AAAPlugin
from plugins.trading.models import AuditLog
from tests.conftest import DATA

pytestmark = pytest.mark.integration

FAST = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 8,
    "argon2_parallelism": 1,
    "max_login_attempts": 2,
}
PASSWORD = "correct horse battery"


@pytest.fixture()
def cli_env(trading_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """DATABASE_URL and a corec_config.json enabling the aaa plugin with fast hashing."""
    config = json.loads((DATA / "small_config.json").read_text())
    config["plugins"] = [{"name": "aaa", "config_path": "aaa.json"}]
    (tmp_path / "aaa.json").write_text(json.dumps(FAST))
    (tmp_path / "corec_config.json").write_text(json.dumps(config))
    monkeypatch.setenv("COREC_CONFIG", str(tmp_path / "corec_config.json"))
    monkeypatch.setenv("DATABASE_URL", trading_url)
    monkeypatch.setenv("COREC_JWT_SECRET", "k" * 40)
    return trading_url


def corec(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def _listed(name: str) -> dict[str, Any]:
    result = corec("users", "list", "--json")
    assert result.exit_code == 0, result.output
    [user] = [u for u in json.loads(result.output) if u["username"] == name]
    return dict(user)


def test_add_list_disable_enable(cli_env: str) -> None:
    name = f"op{uuid.uuid4().hex[:8]}"
    added = corec(
        "users", "add", name, "--role", "member", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert added.exit_code == 0, added.output
    assert f"added '{name}' (member)" in added.output
    assert _listed(name)["role"] == "member" and _listed(name)["is_active"] is True

    table = corec("users", "list")
    assert table.exit_code == 0 and name in table.output

    aaa = AAAPlugin.from_url(cli_env, FAST)
    try:
        token = aaa.authenticate(name, PASSWORD)
        assert corec("users", "disable", name).exit_code == 0
        assert _listed(name)["is_active"] is False
        with pytest.raises(TokenRevokedError, match="revoked"):
            aaa.verify(token)
        assert corec("users", "enable", name).exit_code == 0
        aaa.authenticate(name, PASSWORD)
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                aaa.authenticate(name, "wrong password!")
        assert _listed(name)["locked_until"] is not None
        assert corec("users", "unlock", name).exit_code == 0
        assert _listed(name)["locked_until"] is None
        aaa.authenticate(name, PASSWORD)
        with aaa._sessions() as db:
            vias = [
                json.loads(d)["via"]
                for d in db.scalars(select(AuditLog.details).where(AuditLog.user_id.is_(None)))
                if d and f'"{name}"' in d and '"via"' in d
            ]
        assert len(vias) == 4 and all(v.startswith("cli") for v in vias)
    finally:
        aaa.close()


def test_add_prompts_twice_without_password_stdin(cli_env: str) -> None:
    name = f"op{uuid.uuid4().hex[:8]}"
    mismatch = corec(
        "users",
        "add",
        name,
        "--role",
        "viewer",
        stdin=f"{PASSWORD}\nsomething else\n{PASSWORD}\n{PASSWORD}\n",
    )
    assert mismatch.exit_code == 0, mismatch.output
    assert "do not match" in mismatch.output
    assert _listed(name)["role"] == "viewer"


def test_errors_are_one_clear_line(cli_env: str) -> None:
    name = f"op{uuid.uuid4().hex[:8]}"
    short = corec("users", "add", name, "--role", "admin", "--password-stdin", stdin="short\n")
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    ghost = corec("users", "disable", f"ghost{name}")
    assert ghost.exit_code == 1 and f"no user named 'ghost{name}'" in ghost.output
    bad_role = corec("users", "add", name, "--role", "root", "--password-stdin", stdin="x\n")
    assert bad_role.exit_code == 2 and "'root' is not one of" in bad_role.output
    corec("users", "add", name, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    dup = corec("users", "add", name, "--role", "admin", "--password-stdin", stdin=PASSWORD)
    assert dup.exit_code == 1 and "already exists" in dup.output


def test_runs_on_database_url_alone_without_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(tmp_path / "absent.json"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'node.db'}")
    added = corec("users", "add", "solo", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    assert added.exit_code == 0, added.output
    assert _listed("solo")["role"] == "admin"
