"""The committed locks: what `make install` and the Dockerfile install, and how they agree."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "requirements"))
from check_freeze import canonical, main, pins  # noqa: E402

RUNTIME, DEV = ROOT / "requirements" / "runtime.txt", ROOT / "requirements" / "dev.txt"


def requirement_names(section: str) -> set[str]:
    """The package names setup.cfg lists under ``section`` (install_requires or an extra)."""
    text = (ROOT / "setup.cfg").read_text()
    block = re.search(rf"^{section} =\n((?:    .+\n)+)", text, re.M)
    assert block, section
    return {canonical(re.split(r"[\[<>=!~ ]", line.strip())[0])
            for line in block.group(1).splitlines()}  # fmt: skip


def test_every_line_of_both_locks_carries_a_hash() -> None:
    hashed = re.compile(r"^\S+==\S+ \\\n(?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+", re.M)
    for lock in (RUNTIME, DEV):
        assert len(hashed.findall(lock.read_text())) == len(pins(lock)) > 50, lock


def test_the_dev_lock_holds_the_runtime_lock_at_the_same_versions() -> None:
    runtime, dev = pins(RUNTIME), pins(DEV)
    assert {n: dev.get(n) for n in runtime} == runtime


def test_the_locks_cover_setup_cfg_and_pin_the_installer() -> None:
    runtime, dev = pins(RUNTIME), pins(DEV)
    assert requirement_names("install_requires") <= set(runtime)
    assert requirement_names("dev") <= set(dev)
    # pip itself and the build backend are pinned too: nothing in a fresh venv floats.
    assert {"pip", "setuptools", "wheel"} <= set(dev)


def test_the_image_and_make_install_use_the_locks_with_hashes() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements/runtime.txt" in docker
    make = (ROOT / "Makefile").read_text()
    assert "LOCK     := requirements/dev.txt" in make
    assert "--require-hashes --no-deps -r $(LOCK)" in make


def test_check_freeze_names_each_difference(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("pytest==0.0.1 \\\n    --hash=sha256:00\nno-such-package-x==1.0\n")
    assert main([str(lock)]) == 1
    err = capsys.readouterr().err
    assert "pytest: " in err and ", 0.0.1 locked" in err
    assert "no-such-package-x==1.0 is locked but not installed" in err
    assert "pluggy==" in err and "is installed but not in the lock" in err
