"""docker-compose.yml cannot run here (no Docker engine): check it parses and that
every service's command exists in the CLI, Celery or the Makefile."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

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


#: The deployment's keys (issue 19) and the services that hold each: every service that
#: runs CoreC code holds the four node keys; login tokens are the API's alone.
NODE_KEYS = ("COREC_TASK_KEY", "COREC_GRANT_KEY", "COREC_STREAM_KEY", "COREC_LEDGER_KEY")
API_KEYS = ("COREC_JWT_SECRET",)
COREC_SERVICES = {"migrate", "worker", "beat", "flower", "api", "metrics"}


def _required(value: object, key: str) -> bool:
    """``${KEY:?message}``: compose stops when KEY is unset or empty, and has no default."""
    return re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", str(value)) is not None


def key_problems(services: dict[str, Any]) -> list[str]:
    """Each way ``services`` fails to hand a service exactly the keys it needs, each one
    required (``${KEY:?...}``), none defaulted."""
    problems = []
    for name, svc in services.items():
        env = svc.get("environment") or {}
        runs_corec = svc.get("image") == "corec:latest"
        wanted = (NODE_KEYS + (API_KEYS if name == "api" else ())) if runs_corec else ()
        for key in wanted:
            if key not in env:
                problems.append(f"{name} lacks {key}")
            elif not _required(env[key], key):
                problems.append(f"{name}: {key} is {env[key]!r}, not ${{{key}:?...}}")
        for key in sorted(set(env) & set(NODE_KEYS + API_KEYS) - set(wanted)):
            problems.append(f"{name} holds {key}, which it does not need")
    return problems


def test_compose_passes_every_key_required_to_every_service_that_needs_it() -> None:
    """Measured on main: neither COREC_GRANT_KEY nor COREC_STREAM_KEY was passed, so each
    container made its own keys and every capital action through the API was refused."""
    services = compose()["services"]
    runs_corec = {n for n, s in services.items() if s.get("image") == "corec:latest"}
    assert runs_corec == COREC_SERVICES, runs_corec
    assert key_problems(services) == []
    # No key anywhere in the file with a default or a literal value.
    text = (ROOT / "docker-compose.yml").read_text()
    for key in NODE_KEYS + API_KEYS:
        for use in re.findall(rf"\$\{{{key}\b[^}}]*\}}", text):
            assert _required(use, key), use


def test_a_service_missing_a_key_fails_the_check() -> None:
    """The check above on copies of the compose file that each get one key wrong."""
    for name, key, value, problem in [
        ("worker", "COREC_STREAM_KEY", None, "worker lacks COREC_STREAM_KEY"),
        ("api", "COREC_TASK_KEY", None, "api lacks COREC_TASK_KEY"),
        ("api", "COREC_JWT_SECRET", None, "api lacks COREC_JWT_SECRET"),
        ("migrate", "COREC_LEDGER_KEY", None, "migrate lacks COREC_LEDGER_KEY"),
        ("beat", "COREC_GRANT_KEY", "${COREC_GRANT_KEY:-}", "beat: COREC_GRANT_KEY is"),
        ("flower", "COREC_TASK_KEY", "${COREC_TASK_KEY}", "flower: COREC_TASK_KEY is"),
        ("metrics", "COREC_STREAM_KEY", "k" * 40, "metrics: COREC_STREAM_KEY is"),
        ("worker", "COREC_JWT_SECRET", "${COREC_JWT_SECRET:?x}", "worker holds COREC_JWT"),
        ("redis", "COREC_TASK_KEY", "${COREC_TASK_KEY:?x}", "redis holds COREC_TASK_KEY"),
    ]:
        services = copy.deepcopy(compose()["services"])
        # Its own copy: services sharing the YAML anchor share one dict.
        env = services[name]["environment"] = dict(services[name].get("environment") or {})
        if value is None:
            del env[key]
        else:
            env[key] = value
        found = key_problems(services)
        assert len(found) == 1 and found[0].startswith(problem), (name, key, found)


def test_compose_flower_runs_with_the_task_api_off() -> None:
    """Flower's task-apply API is off unless .env says COREC_FLOWER_TASK_API=1."""
    flower = compose()["services"]["flower"]
    assert "--conf=/app/deploy/flower/flowerconfig.py" in flower["command"]
    assert (ROOT / "deploy" / "flower" / "flowerconfig.py").is_file()
    assert flower["environment"]["COREC_FLOWER_TASK_API"] == "${COREC_FLOWER_TASK_API:-0}"
    assert "--conf=$(CURDIR)/deploy/flower/flowerconfig.py" in (ROOT / "Makefile").read_text()


def test_compose_publishes_metrics_and_dashboards_on_loopback_only() -> None:
    services = compose()["services"]
    for name in ("metrics", "prometheus", "grafana"):
        for port in services[name]["ports"]:
            assert re.fullmatch(r"\$\{\w+:-127\.0\.0\.1\}:\d+:\d+", port), (name, port)
