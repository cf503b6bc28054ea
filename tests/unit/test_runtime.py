"""The per-process runtime: settings, services made once, dropped by reset and by a fork."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from corec_tasks.runtime import Runtime, get_settings, reset, runtime

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "small_config.json"))
    monkeypatch.setenv("COREC_REDIS_PREFIX", "rt1:")
    monkeypatch.setenv("COREC_DATA_DIR", str(tmp_path))
    reset()
    yield
    reset()


def test_a_service_is_made_once_per_runtime() -> None:
    made: list[Runtime] = []

    def factory(rt: Runtime) -> object:
        made.append(rt)
        return object()

    one = runtime().service("test.thing", factory)
    assert runtime().service("test.thing", factory) is one and made == [runtime()]
    reset()
    assert runtime().service("test.thing", factory) is not one and len(made) == 2


def test_reset_reads_the_settings_again(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings().redis_prefix == "rt1:"
    monkeypatch.setenv("COREC_REDIS_PREFIX", "rt2:")
    assert get_settings().redis_prefix == "rt1:"  # parsed once per runtime
    reset()
    assert get_settings().redis_prefix == "rt2:"


def test_reset_with_settings_installs_them() -> None:
    from corec_tasks.settings import load_settings

    mine = load_settings()
    assert reset(mine) is runtime() and get_settings() is mine


def test_per_config_is_keyed_by_the_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from corec_tasks.settings import load_settings

    small = load_settings()
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    capital = load_settings()
    rt = runtime()
    assert rt.per_config(small, "test.path", lambda s: str(s.config_path)).endswith(
        "small_config.json"
    )
    assert rt.per_config(capital, "test.path", lambda s: str(s.config_path)).endswith(
        "capital_config.json"
    )
    assert rt.per_config(small, "test.path", lambda s: "again").endswith("small_config.json")


def test_a_forked_child_builds_its_own_runtime() -> None:
    parent = runtime()
    parent_thing = parent.service("test.thing", lambda _: object())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, without pytest's teardown
        child = runtime()
        fresh = child is not parent and child.pid == os.getpid()
        fresh = fresh and child.service("test.thing", lambda _: object()) is not parent_thing
        os.write(write, b"1" if fresh else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1"
    assert runtime() is parent
