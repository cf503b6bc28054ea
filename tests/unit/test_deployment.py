"""docker-compose.yml cannot run here (no Docker engine): check it parses and that
every service's command exists in the CLI, Celery or the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from corec_tasks.cli import main

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_design_services() -> None:
    services = compose()["services"]
    assert {"redis", "postgres", "worker", "beat", "flower"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "noeviction" in redis_cmd and "--appendonly yes" in redis_cmd


def test_compose_commands_exist() -> None:
    runner = CliRunner()
    for name, svc in compose()["services"].items():
        cmd = svc.get("command")
        if not cmd or name in ("redis", "postgres"):
            continue
        if cmd[0] == "corec":
            args = [a for a in cmd[1:] if not a.startswith("$")]
            res = runner.invoke(main, [*args, "--help"])
            assert res.exit_code == 0, (name, res.output)
        else:
            assert cmd[:3] == ["celery", "-A", "corec_tasks"], name
            assert cmd[3] in ("worker", "beat", "flower"), name


def test_compose_settings_come_from_env() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "your_password" not in text and "secure_password" not in text
    assert "${POSTGRES_PASSWORD:?" in text and "${FLOWER_BASIC_AUTH:?" in text


def test_makefile_has_every_entry_point() -> None:
    targets = set(re.findall(r"^([a-z_-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {"demo", "test", "lint", "bench", "workers", "beat", "flower", "clean"} <= targets


def test_image_takes_no_secret_and_runs_unprivileged() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".corec/", ".git/", ".venv/"} <= set(ignored)
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users


def test_compose_requires_passwords_and_binds_loopback() -> None:
    services = compose()["services"]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${REDIS_PASSWORD:?" in text
    assert "--requirepass" in services["redis"]["command"]
    for name in ("flower", "api"):
        for port in services[name]["ports"]:
            assert re.fullmatch(r"\$\{\w+:-127\.0\.0\.1\}:\d+:\d+", port), (name, port)


def test_make_flower_binds_loopback_by_default() -> None:
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^FLOWER_ADDRESS \?= 127\.0\.0\.1$", text, re.M)
    assert "--address=$(FLOWER_ADDRESS)" in text


def _postgres_user(url: str) -> str:
    match = re.match(r"postgresql://(\$\{[^}]*\}|[^:@]+)", url)
    assert match, url
    return match[1]


def test_compose_app_connects_as_the_app_role_and_only_migrate_as_the_owner() -> None:
    services = compose()["services"]
    app_user = "${POSTGRES_APP_USER:-corec_app}"
    owner_user = "${POSTGRES_USER:-corec}"
    init = ROOT / "deploy" / "postgres" / "initdb"
    pg = services["postgres"]
    assert f"./{init.relative_to(ROOT)}:/docker-entrypoint-initdb.d:ro" in pg["volumes"]
    assert pg["environment"]["POSTGRES_APP_PASSWORD"].startswith("${POSTGRES_APP_PASSWORD:?")
    script = (init / "10-corec-app-role.sh").read_text()
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in script and "GRANT" not in script
    assert (init / "10-corec-app-role.sh").stat().st_mode & 0o111
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if "DATABASE_URL" not in env:
            continue
        assert _postgres_user(env["DATABASE_URL"]) == app_user, name
        assert "${POSTGRES_APP_PASSWORD:?" in env["DATABASE_URL"], name
        owner_url = env.get("COREC_MIGRATE_DATABASE_URL")
        if name == "migrate":
            assert owner_url and _postgres_user(owner_url) == owner_user
            assert svc["command"] == ["corec", "db", "upgrade"]
        else:  # nothing but migrate holds the owner's password
            assert owner_url is None and "POSTGRES_PASSWORD" not in str(env), name


def test_compose_worker_scales_with_scale_flag() -> None:
    """`docker compose up --scale worker=N` needs replicas that can coexist: no fixed
    container name, hostname or host port, and no fixed node name (each replica is
    celery@<its container id>); the file's replica count is only the default."""
    worker = compose()["services"]["worker"]
    assert not {"container_name", "hostname", "ports", "scale"} & set(worker), worker
    assert "-n" not in worker["command"] and "--hostname" not in worker["command"]
    assert re.fullmatch(r"\$\{WORKER_REPLICAS:-1\}", str(worker["deploy"]["replicas"]))
