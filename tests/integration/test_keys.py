"""The deployment's keys (issues 19 and 21): made once by `corec keys init`, shared by
every node, never made by a process on its own; a worker without them does not start."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from corec_tasks.procs import start, stop, worker_cmd
from corec_tasks.settings import Settings
from tests.conftest import DATA, ROOT

pytestmark = pytest.mark.integration

KEYS = {"COREC_TASK_KEY": "task.key", "COREC_STREAM_KEY": "stream.key",
        "COREC_GRANT_KEY": "grant.key", "COREC_LEDGER_KEY": "ledger.key"}  # fmt: skip


def _corec(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corec_tasks.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_keys_init_makes_each_key_once_and_show_paths_says_where(
    settings: Settings, tmp_path: Path
) -> None:
    data = tmp_path / "node1" / ".corec"
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(COREC_DATA_DIR=str(data), COREC_CONFIG=str(DATA / "capital_config.json"))
    missing = _corec("keys", "show-paths", "--json", env=env)
    assert missing.returncode == 1
    assert {(r["env"], r["source"]) for r in json.loads(missing.stdout)} == {
        (k, "MISSING") for k in KEYS}  # fmt: skip
    made = _corec("keys", "init", "--json", env=env)
    assert made.returncode == 0, made.stderr
    rows = json.loads(made.stdout)
    assert {(r["env"], Path(r["file"]).name, r["state"]) for r in rows} == {
        (k, f, "made") for k, f in KEYS.items()}  # fmt: skip
    keys = {f: (data / f).read_bytes() for f in KEYS.values()}
    assert len(set(keys.values())) == len(KEYS) and all(len(k) == 64 for k in keys.values())
    assert all(stat.S_IMODE((data / f).stat().st_mode) == 0o600 for f in KEYS.values())
    again = _corec("keys", "init", "--json", env=env)
    assert {r["state"] for r in json.loads(again.stdout)} == {"kept"}
    assert {f: (data / f).read_bytes() for f in KEYS.values()} == keys  # never replaced
    shown = _corec("keys", "show-paths", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "COREC_TASK_KEY" in shown.stdout and "worker" in shown.stdout
    assert not any(k.decode() in shown.stdout + made.stdout for k in keys.values())
    # A key given in the environment is left to it: no file is made for it.
    other = tmp_path / "node2" / ".corec"
    env2 = dict(env, COREC_DATA_DIR=str(other), COREC_TASK_KEY="t" * 40)
    rows2 = json.loads(_corec("keys", "init", "--json", env=env2).stdout)
    assert ("COREC_TASK_KEY", "-", "from the environment") in {
        (r["env"], r["file"], r["state"]) for r in rows2}  # fmt: skip
    assert not (other / "task.key").exists() and (other / "stream.key").exists()


def test_a_worker_without_the_task_key_refuses_to_start(
    settings: Settings, tmp_path: Path
) -> None:
    bare = tmp_path / "bare" / ".corec"
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env["COREC_DATA_DIR"] = str(bare)
    log = tmp_path / "worker.log"
    proc = start(worker_cmd("nokeys", 1), log, env)
    try:
        rc = proc.wait(timeout=60)
    finally:
        stop(proc)
    text = log.read_text()
    assert rc != 0, text[-2000:]
    assert "COREC_TASK_KEY is not set" in text and "corec keys init" in text, text[-2000:]
    assert not (bare / "task.key").exists()
