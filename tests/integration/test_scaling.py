"""Scaling a node's worker count: `make workers AUTOSCALE=max,min` starts a worker whose
pool a user resizes with `celery control autoscale`; the default (fixed WORKERS) does not
take that command. The worker is started with the arguments `make workers` itself runs
(its dry run), so the test follows the Makefile."""

from __future__ import annotations

import json
import shlex
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from corec_tasks.procs import celery_cmd, managed
from corec_tasks.settings import Settings
from tests.integration.workers import celery, wait_for_nodes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def make_worker_args(*overrides: str) -> list[str]:
    """The ``celery worker`` arguments of ``make workers OVERRIDES`` (from ``make -n``)."""
    res = subprocess.run(["make", "-n", "workers", *overrides], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    for line in res.stdout.replace("\\\n", " ").splitlines():
        args = shlex.split(line)
        if "worker" in args and any(a.endswith("celery") for a in args):
            return args[args.index("worker") + 1 :]
    raise AssertionError(f"no celery worker command in:\n{res.stdout}")


def node_worker(args: list[str], name: str) -> list[str]:
    """``args`` with this test's node name (the Makefile's is per host)."""
    i = args.index("-n")
    named = [*args[:i], "-n", f"{name}@%h", *args[i + 2 :]]
    return celery_cmd("worker", *named, "--without-mingle", "--without-gossip")


def test_make_workers_autoscale_flag() -> None:
    assert "--autoscale" not in make_worker_args()
    assert "--concurrency" in make_worker_args()
    args = make_worker_args("AUTOSCALE=3,1")
    assert args[args.index("--autoscale") + 1] == "3,1" and "--concurrency" not in args


@pytest.mark.timeout(180)
def test_autoscaled_worker_answers_control_autoscale(settings: Settings, tmp_path: Path) -> None:
    auto = node_worker(make_worker_args("AUTOSCALE=3,1"), "auto")
    fixed = node_worker(make_worker_args(), "fixed")  # the shipped default: WORKERS=2
    with ExitStack() as stack:
        stack.enter_context(managed(auto, tmp_path / "auto.log"))
        stack.enter_context(managed(fixed, tmp_path / "fixed.log"))
        nodes = wait_for_nodes(2, tmp_path)
        auto_node = next(n for n in nodes if n.startswith("auto@"))
        fixed_node = next(n for n in nodes if n.startswith("fixed@"))

        res = celery("control", "autoscale", "4", "1", "-d", auto_node, "--timeout", "5")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Autoscale not enabled" not in res.stdout, res.stdout
        assert "autoscale now max=4 min=1" in res.stdout, res.stdout
        stats = celery("inspect", "stats", "-d", auto_node, "--json", "--timeout", "5")
        scaler = json.loads(stats.stdout)[auto_node]["autoscaler"]
        assert (scaler["max"], scaler["min"]) == (4, 1), scaler

        res = celery("control", "autoscale", "4", "1", "-d", fixed_node, "--timeout", "5")
        assert "Autoscale not enabled" in res.stdout + res.stderr, res.stdout + res.stderr
