"""The plugin boundary: a plugin from outside plugins/ (tests/data/outside/echo_plugin),
enabled through COREC_PLUGIN_PATH, brings its table, CLI group, beat entry, block and
consumer without a line changed in corec_tasks/; disabled, none of it is there."""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from beat_schedule import build_beat_schedule
from corec_tasks.cli import main
from corec_tasks.db import libpq_url
from corec_tasks.discovery import enabled
from corec_tasks.runtime import get_settings
from corec_tasks.runtime import reset as reset_runtime
from corec_tasks.settings import Settings, load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
OUTSIDE = DATA / "outside"


@pytest.fixture()
def echo_on(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COREC_PLUGIN_PATH", str(OUTSIDE))
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "echo_config.json"))
    return DATA / "echo_config.json"


@pytest.fixture()
def echo_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = json.loads((DATA / "echo_config.json").read_text())
    for entry in config["plugins"]:
        if entry["name"] == "echo_plugin":
            entry.update(enabled=False, config_path=None)
    path = tmp_path / "corec_config.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("COREC_PLUGIN_PATH", str(OUTSIDE))
    monkeypatch.setenv("COREC_CONFIG", str(path))
    return path


@pytest.fixture()
def fresh_db(servers: dict[str, str], run_id: str, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[str]:  # fmt: skip
    from sqlalchemy.engine import make_url

    admin = libpq_url(servers["database_url"])
    name = f"corec_t_{run_id}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(servers["database_url"]).set(database=name).render_as_string(False)
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url: str) -> set[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def _schedule() -> dict[str, dict[str, object]]:
    settings = load_settings()
    return build_beat_schedule(settings, enabled(settings))


def test_capital_disabled_schedules_no_capital_task(settings: Settings) -> None:
    """tests/data/small_config.json has no capital_pool: beat sends no capital task."""
    tasks = {e["task"] for e in build_beat_schedule(settings, enabled(settings)).values()}
    names = build_beat_schedule(settings, enabled(settings)).keys()
    assert not any(t.startswith("capital_pool.") for t in tasks)
    assert not any(n.startswith("consume-capital_pool-") for n in names)
    default = load_settings(ROOT / "corec_config.json")
    schedule = build_beat_schedule(default, enabled(default))
    tasks = {e["task"] for e in schedule.values()}
    assert {"capital_pool.allocate", "trading.cycle"} <= tasks
    # Its consumers are manifest entries, driven by the framework's consume task.
    assert schedule["consume-capital_pool-trading_results-capital_pool"]["task"] == (
        "corec.plugins.consume")


def test_beat_help_and_table_when_enabled(settings: Settings, echo_on: Path, fresh_db: str
                                          ) -> None:  # fmt: skip
    schedule = _schedule()
    assert schedule["echo-tick"]["task"] == "echo_plugin.tick"
    assert schedule["echo-tick"]["schedule"] == 30.0
    assert schedule["consume-echo_plugin-echo_events-echo"]["task"] == "corec.plugins.consume"
    shown = CliRunner().invoke(main, ["--help"])
    assert "echo " in shown.output and "The test plugin's commands." in shown.output
    hello = CliRunner().invoke(main, ["echo", "hello"])
    assert hello.exit_code == 0 and "hello from echo_plugin" in hello.output
    upgraded = CliRunner().invoke(main, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "echo_words" in _tables(fresh_db)
    assert "e001_echo" in upgraded.output


def test_nothing_when_disabled(settings: Settings, echo_off: Path, fresh_db: str) -> None:
    from corec_tasks.streams.persister import default_streams

    assert not any(k.startswith(("echo", "consume-echo")) for k in _schedule())
    assert "echo_events" not in default_streams(load_settings())
    assert "echo " not in CliRunner().invoke(main, ["--help"]).output
    assert CliRunner().invoke(main, ["echo", "hello"]).exit_code != 0
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    assert "echo_words" not in _tables(fresh_db) and "bloques" in _tables(fresh_db)


def test_its_block_runs_and_its_consumer_receives(settings: Settings, echo_on: Path,
                                                  fresh_db: str) -> None:  # fmt: skip
    from corec_tasks.nucleus import Nucleus
    from corec_tasks.plugin_consumers import consume_round
    from corec_tasks.storage.migrate import upgrade
    from corec_tasks.streams.bus import StreamBus

    upgrade(fresh_db)
    echo = load_settings()
    nucleus = Nucleus(echo)
    nucleus.initialize()
    try:
        assert [p.name for p in nucleus.plugins] == ["aaa", "echo_plugin"]
        assert nucleus.plugins[1].config == {"repeat": 2}
        nucleus.modules["registry"].run()
        [summary] = nucleus.engine.run_blocks(["echo_block"], 1, 1_700_000_000.0)
        assert summary["block_id"] == "echo_block"
    finally:
        nucleus.stop()
    with StreamBus(echo) as bus:
        bus.ensure_group("echo_events", "echo")
        bus.publish("echo_events", {"word": "ping"})
        bus.publish("echo_events", {"word": "pong"})
        bus.publish("echo_events", {"word": "pong", "extra": 1})  # EchoEvent forbids it
    entry = _schedule()["consume-echo_plugin-echo_events-echo"]
    reset_runtime()
    try:
        result = consume_round(get_settings(), **entry["kwargs"])
    finally:
        reset_runtime()
    assert result == {"handled": 2, "failed": 0, "dead_lettered": 1}
    with psycopg.connect(libpq_url(fresh_db)) as conn:
        words = [r[0] for r in conn.execute("SELECT word FROM echo_words ORDER BY id")]
    assert words == ["ping", "pong"]
    # "persisted": the persister lands the plugin's stream in eventos beside the seeds'
    # (the entry its schema refuses goes to the dead letter instead).
    from corec_tasks.streams.persister import default_streams, persist_once

    assert default_streams(echo)[-1] == "echo_events"
    stats = persist_once(echo)
    assert stats.streams["echo_events"].inserted == 2, stats.streams["echo_events"]
    with psycopg.connect(libpq_url(fresh_db)) as conn:
        landed = conn.execute("SELECT count(*) FROM eventos WHERE canal = 'echo_events'").fetchone()
    assert landed == (2,)


def test_the_framework_names_no_plugin_module() -> None:
    """No import of plugins/ (ruff TID251 checks that) and no "plugins.x" import string."""
    files = [*sorted((ROOT / "corec_tasks").rglob("*.py")), ROOT / "beat_schedule.py",
             ROOT / "celeryconfig.py"]  # fmt: skip
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""]
                found += [f"{path}: import {n}" for n in names if n.split(".")[0] == "plugins"]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip()
                if re.fullmatch(r"plugins(\.\w+)+(:[\w.]+)?", text):
                    found.append(f"{path}: {text!r}")
    assert found == []


def test_config_check_names_the_wrong_key_of_a_plugin_config(echo_on: Path, tmp_path: Path
                                                             ) -> None:  # fmt: skip
    ok = CliRunner().invoke(main, ["config", "check"])
    assert ok.exit_code == 0 and "echo_plugin 0.1.0" in ok.output
    config = json.loads(echo_on.read_text())
    (tmp_path / "echo.json").write_text('{"repeat": 11, "colour": "red"}')
    config["plugins"][1]["config_path"] = str(tmp_path / "echo.json")
    (tmp_path / "corec_config.json").write_text(json.dumps(config))
    bad = CliRunner().invoke(main, ["config", "check", str(tmp_path / "corec_config.json")])
    assert bad.exit_code == 1
    assert "plugins.echo_plugin.config.repeat" in bad.output
    assert "plugins.echo_plugin.config.colour" in bad.output


def test_a_bad_manifest_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "typo_plugin"
    folder.mkdir()
    (folder / "plugin.json").write_text('{"name": "typo_plugin", "taks": ["x.tasks"]}')
    (tmp_path / "c.json").write_text('{"plugins": [{"name": "typo_plugin"}]}')
    monkeypatch.setenv("COREC_PLUGIN_PATH", str(tmp_path))
    bad = CliRunner().invoke(main, ["config", "check", str(tmp_path / "c.json")])
    assert bad.exit_code == 1 and "taks: Extra inputs" in bad.output and "typo_plugin" in bad.output


def test_plugins_list_and_show(echo_on: Path) -> None:
    listed = CliRunner().invoke(main, ["plugins", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    found = {p["name"]: p for p in json.loads(listed.output)}
    assert found["echo_plugin"]["enabled"] and not found["broker"]["enabled"]
    assert found["capital_pool"]["beat"][0]["task"] == "capital_pool.allocate"
    shown = CliRunner().invoke(main, ["plugins", "show", "echo_plugin", "--json"])
    info = json.loads(shown.output)
    assert info["tasks"] == ["echo_plugin.tasks"] and info["blocks"] == ["echo_block"]
    assert info["consumers"][0]["handler"] == "echo_plugin.handlers:on_event"
    assert info["migrations"].endswith("echo_plugin/migrations")
    assert CliRunner().invoke(main, ["plugins", "show", "nope"]).exit_code == 1


def test_its_stream_schema_validates_payloads(echo_on: Path) -> None:
    from corec_tasks.runtime import reset as reset_runtime
    from corec_tasks.streams.schemas import PayloadError, check_payload, schema_for

    reset_runtime()
    try:
        assert schema_for("echo_events").__name__ == "EchoEvent"  # type: ignore[union-attr]
        check_payload("echo_events", b'{"word": "ok"}')
        with pytest.raises(PayloadError, match="word"):
            check_payload("echo_events", b'{"word": ""}')
    finally:
        reset_runtime()


def test_its_command_handler_answers_on_corec_responses(settings: Settings, echo_on: Path
                                                        ) -> None:  # fmt: skip
    """A command its manifest declares is answered by the one dispatcher, under the
    plugin's name as target; another target, or a handler that raises, gets an error."""
    from corec_tasks.commands import drain, registry_for
    from corec_tasks.nucleus import Nucleus
    from corec_tasks.streams.bus import StreamBus

    reset_runtime()
    try:
        echo = load_settings()
        nucleus = Nucleus(echo)
        nucleus.initialize()
        registry = registry_for(nucleus)
        with StreamBus(echo) as bus:
            bus.publish("corec_commands", {"id": "c1", "command": "echo",
                                           "target": "echo_plugin", "args": {"x": 1}})
            bus.publish("corec_commands", {"id": "c2", "command": "echo", "target": "other"})
            bus.publish("corec_commands", {"id": "c3", "command": "echo",
                                           "target": "echo_plugin", "args": {"boom": 1}})
            assert drain(echo, bus.client, registry)["answered"] == 3
            answers = {a["payload"]["id"]: a["payload"] for a in bus.tail("corec_responses", 10)}
    finally:
        reset_runtime()
    assert answers["c1"]["response"] == {"echoed": {"x": 1}}
    assert "other" in answers["c2"]["error"]
    assert "boom" in answers["c3"]["error"]


def test_no_command_of_a_disabled_plugin(settings: Settings, echo_off: Path) -> None:
    from corec_tasks.commands import registry_for
    from corec_tasks.nucleus import Nucleus

    reset_runtime()
    try:
        nucleus = Nucleus(load_settings())
        nucleus.initialize()
        assert "echo_plugin" not in registry_for(nucleus).targets()
    finally:
        reset_runtime()


def test_a_disabled_plugins_applied_branch_does_not_break_upgrades(
    settings: Settings, echo_on: Path, fresh_db: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Upgraded once with the plugin on, the database holds its branch's revision; with
    the plugin off, `db upgrade` still finds that revision (and upgrades only the rest)."""
    from corec_tasks.storage.migrate import current, head, upgrade

    upgrade(fresh_db)
    assert "e001_echo" in (current(fresh_db) or "")
    config = json.loads(echo_on.read_text())
    for entry in config["plugins"]:
        if entry["name"] == "echo_plugin":
            entry.update(enabled=False, config_path=None)
    off = tmp_path / "off.json"
    off.write_text(json.dumps(config))
    monkeypatch.setenv("COREC_CONFIG", str(off))
    upgrade(fresh_db)  # "Can't locate revision" before
    assert "e001_echo" not in head()
    assert "echo_words" in _tables(fresh_db)  # left as it was, not dropped


def test_config_check_and_plugins_show_name_a_missing_requirement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pipeline imports capital_pool, broker, ...: enabled without them, `corec config
    check` names the entry's key and each plugin missing; `plugins show` lists them."""
    config = json.loads((DATA / "small_config.json").read_text())
    config["plugins"] = [{"name": "aaa"}, {"name": "pipeline"}, {"name": "feeds"}]
    path = tmp_path / "corec_config.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("COREC_CONFIG", str(path))
    bad = CliRunner().invoke(main, ["config", "check", str(path)])
    assert bad.exit_code == 1, bad.output
    assert "plugins[1].requires" in bad.output
    assert "pipeline requires broker, capital_pool, core, which are not enabled" in bad.output
    shown = CliRunner().invoke(main, ["plugins", "show", "pipeline", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["requires"] == ["aaa", "broker", "capital_pool", "core",
                                                    "feeds"]  # fmt: skip
    config["plugins"] += [{"name": n} for n in ("broker", "capital_pool", "core")]
    path.write_text(json.dumps(config))
    ok = CliRunner().invoke(main, ["config", "check", str(path)])
    assert ok.exit_code == 0, ok.output
