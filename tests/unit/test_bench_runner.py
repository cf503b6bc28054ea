"""`make bench`'s runner and sizes: strict settings, every benchmark found, failures named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as runner
from benchmarks._common import _int_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw", ["0", "-1", "1_000", "2.5", "five", "٣"])
def test_a_size_is_a_plain_whole_number(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("BENCH_X", raw)
    with pytest.raises(SystemExit, match=f"BENCH_X must be a whole number >= 1, not {raw!r}"):
        _int_env("BENCH_X", 3)


def test_a_size_defaults_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_X", raising=False)
    assert _int_env("BENCH_X", 3) == 3
    monkeypatch.setenv("BENCH_X", "12")
    assert _int_env("BENCH_X", 3) == 12


def test_every_benchmark_file_is_run() -> None:
    files = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py"))
    assert runner.names() == files and "node_loss_recovery_s" in files


def test_an_unknown_name_is_refused_listing_the_names() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "cycle_wall_s,nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert "no benchmark named 'nope'; there are: " in out.stderr and "cycle_wall_s" in out.stderr


def test_a_failing_benchmark_fails_the_run_and_is_named(tmp_path: Path) -> None:
    # A copy of the runner beside a benchmark that fails and one that passes.
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text((ROOT / "benchmarks" / "__main__.py").read_text())
    (pkg / "bench_bad.py").write_text("raise SystemExit('broken on purpose')\n")
    (pkg / "bench_good.py").write_text("print('{\"bench\": \"good\"}')\n")
    out = subprocess.run([sys.executable, "-m", "benchmarks"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1
    assert '{"bench": "good"}' in out.stdout
    assert "bad: FAILED (exit 1)" in out.stderr
    assert "1 of 2 benchmarks failed: bad" in out.stderr
