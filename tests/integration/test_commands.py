"""corec_commands -> handlers -> corec_responses: answered once per id, errors said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from corec_tasks.commands import drain, registry_for, send
from corec_tasks.nucleus import Nucleus
from corec_tasks.settings import Settings, load_settings
from corec_tasks.streams.bus import StreamBus
from corec_tasks.streams.names import COMMANDS, DEAD_LETTER, RESPONSES
from corec_tasks.streams.schemas import validate_payload
from tests.integration.workers import celery, running_workers

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"


def _responses(client: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    return [validate_payload(RESPONSES, f[b"d"]) for _, f in client.xrange(settings.key(RESPONSES))]


@pytest.fixture()
def nucleus(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Nucleus:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "commands_config.json"))  # has echo_plugin
    n = Nucleus(load_settings())
    n.initialize()
    n.modules["registry"].run()
    return n


def test_each_command_is_answered_once_and_unknown_ones_get_an_error(
    nucleus: Nucleus, redis_client: redis.Redis
) -> None:
    s = nucleus.settings
    registry = registry_for(nucleus)
    ids = nucleus.store.ids()
    sent = {
        "status": send(s, redis_client, "core", "status"),
        "list": send(s, redis_client, "core", "blocks.list"),
        "redirect": send(s, redis_client, "core", "blocks.redirect",
                         {"src": ids[0], "dst": ids[1], "count": 5}),
        "bad_args": send(s, redis_client, "core", "blocks.redirect", {"count": "5"}),
        "no_target": send(s, redis_client, "nobody", "status"),
        "no_command": send(s, redis_client, "core", "reboot"),
        "plugin": send(s, redis_client, "echo_plugin", "echo", {"x": 1}),
    }  # fmt: skip
    # The same id twice (a client retry): answered once, run once.
    send(s, redis_client, "core", "blocks.redirect", {"src": ids[0], "dst": ids[1], "count": 5},
         command_id=sent["redirect"].id)  # fmt: skip
    bus = StreamBus(s, redis_client)
    bus.publish(COMMANDS, {"command": "status"})  # no id: cannot be answered
    stats = drain(s, redis_client, registry)
    assert stats == {"answered": 7, "duplicates": 1, "dead_lettered": 1}
    assert drain(s, redis_client, registry)["answered"] == 0
    answers = {a["id"]: a for a in _responses(redis_client, s)}
    assert len(_responses(redis_client, s)) == 7
    got = {name: answers[cid.id] for name, cid in sent.items()}
    assert got["status"]["response"]["blocks"] == 40
    assert got["list"]["response"][0]["group"] == "lento"
    assert got["redirect"]["response"] == {"moved": 5, "src": ids[0], "dst": ids[1]}
    assert {m["spec"]["id"]: m["num_entidades"] for m in nucleus.store.metas()}[ids[0]] == 395
    assert "bad args" in got["bad_args"]["error"]
    assert "unknown target 'nobody'" in got["no_target"]["error"]
    assert "unknown command 'reboot'" in got["no_command"]["error"]
    assert got["plugin"]["response"] == {"echo": {"x": 1}, "instance": "corec_cmd"}
    (dead,) = bus.dead_letters()
    assert dead["stream"] == COMMANDS and "not a command" in dead["reason"]
    assert redis_client.xlen(s.key(DEAD_LETTER)) == 1


def test_cli_send_wait_prints_the_answer_from_a_worker(
    nucleus: Nucleus, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = dict(os.environ)
    cli = [sys.executable, "-m", "corec_tasks.cli"]
    with running_workers(["cmd"], tmp_path):
        ok = subprocess.Popen([*cli, "commands", "send", "core", "status", "--wait",
                               "--timeout", "60"], stdout=subprocess.PIPE, text=True, env=env)
        bad = subprocess.Popen([*cli, "commands", "send", "core", "nope", "--wait",
                                "--timeout", "60"], stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while ok.poll() is None or bad.poll() is None:
            assert time.monotonic() < deadline, "no answer"
            # What beat does every 2 s, called as a user would.
            assert celery("call", "corec.commands.dispatch").returncode == 0
            time.sleep(1)
    out_ok, out_bad = ok.communicate()[0], bad.communicate()[0]
    assert ok.returncode == 0 and json.loads(out_ok)["response"]["blocks"] == 40
    assert bad.returncode == 1 and "unknown command 'nope'" in json.loads(out_bad)["error"]
    assert len(_responses(redis_client, nucleus.settings)) == 2
