"""ensure_dir: the folder and its missing parents made owner-only, whatever the umask;
what exists left alone; a file in the way named; racing makers agree. And the key
files, its first users outside beat, made in a data folder that does not exist yet."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from corec_tasks.folders import PRIVATE_DIR, ensure_dir
from corec_tasks.keyfile import create_key_file, key_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def umask_022() -> Iterator[None]:
    """The common umask, which ``mkdir -p`` turns into world-readable folders."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_makes_the_folder_and_each_missing_parent_0700(tmp_path: Path, umask_022: None) -> None:
    target, before = tmp_path / "a" / "b" / ".corec", _mode(tmp_path)
    assert ensure_dir(target) == target
    assert PRIVATE_DIR == 0o700
    for folder in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert folder.is_dir() and _mode(folder) == 0o700, folder
    assert _mode(tmp_path) == before  # it existed: untouched


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    ensure_dir(shared)
    assert _mode(shared) == 0o755
    ensure_dir(shared / "inner")
    assert (_mode(shared), _mode(shared / "inner")) == (0o755, 0o700)


def test_another_mode_exactly_even_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        ensure_dir(tmp_path / "public", 0o755)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "public") == 0o755


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="data is in the way"):
        ensure_dir(tmp_path / "data" / "beat")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match="dangling"):
        ensure_dir(tmp_path / "dangling")


def test_a_symlink_to_a_folder_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    ensure_dir(tmp_path / "link" / "sub")
    assert (tmp_path / "real" / "sub").is_dir()


def test_processes_racing_to_make_it_all_succeed(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "z"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def make() -> None:
        start.wait()
        try:
            ensure_dir(target)
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.is_dir() and _mode(target) == 0o700


def test_a_key_file_in_a_data_folder_not_made_yet(tmp_path: Path, umask_022: None) -> None:
    """`corec keys init` on a fresh machine: the data folder is made with the key."""
    data = tmp_path / "fresh" / ".corec"
    assert create_key_file(data / "grant.key") is True
    assert create_key_file(data / "grant.key") is False  # kept, never replaced
    key = key_file(data / "grant.key", "grant key")
    assert len(key) == 64 and key_file(data / "grant.key") == key
    assert (_mode(data.parent), _mode(data), _mode(data / "grant.key")) == (0o700, 0o700, 0o600)
