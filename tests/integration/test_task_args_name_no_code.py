"""No task argument names code (issue 19): ``corec.plugins.consume`` used to import and
call whatever ``module:attr`` its ``handler`` argument named, so anyone who could write
to the broker ran ``sys:exit`` in a worker on every delivery. It now takes a declared
consumer's plugin, stream and group, and the worker finds the handler in its own
reading of the manifests. Through a real worker process: forged calls are refused,
named in the log, and no pool process dies; unsigned they never reach the pool, and
signed (a key holder, or a bug) they still name no code."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from celery import Celery

from corec_tasks.celeryconfig import build
from corec_tasks.errors import ConfigurationError
from corec_tasks.plugin_consumers import MAX_BATCHES, consume_round
from corec_tasks.runtime import get_settings
from corec_tasks.runtime import reset as reset_runtime
from corec_tasks.settings import Settings, load_settings
from corec_tasks.strict import StrictInputError
from corec_tasks.task_auth import SigningAMQP
from tests.conftest import DATA
from tests.integration.workers import celery, running_workers

pytestmark = pytest.mark.integration

DECLARED = {"plugin": "capital_pool", "stream": "trading_results", "group": "capital_pool"}


def _pool_pids() -> list[int]:
    """The worker's pool processes, as ``celery inspect stats`` reports them."""
    out = celery("inspect", "stats", "--timeout", "5", "--json", timeout=60).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    return sorted(pid for node in stats.values() for pid in node["pool"]["processes"])


def test_a_forged_consume_runs_no_code_and_kills_no_worker(
    capital_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    signed = Celery("forged-consume", set_as_current=False, amqp=SigningAMQP)
    signed.conf.update(build(load_settings()))
    plain = Celery("plain", set_as_current=False)
    plain.conf.update(build(load_settings()))
    forged = [
        {**DECLARED, "handler": "sys:exit"},                       # the measured attack
        {**DECLARED, "handler": "builtins:print", "loop": False},
        {"plugin": "capital_pool", "stream": "capital_data", "group": "evil"},  # undeclared
        {**DECLARED, "max_batches": 10**9},                        # a round without end
    ]
    with running_workers(["forged1"], tmp_path, concurrency=2):
        before = _pool_pids()
        for kwargs in forged:
            plain.send_task("corec.plugins.consume", kwargs=kwargs)
            signed.send_task("corec.plugins.consume", kwargs=kwargs)
        log = tmp_path / "forged1.log"
        deadline = time.monotonic() + 60
        while log.read_text().count("corec.plugins.consume[") < 3 * len(forged):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        text = log.read_text()
        assert _pool_pids() == before, "a pool process died"
    refused = ('raised unexpected: TypeError("consume() got an unexpected keyword '
               "argument 'handler'")
    assert text.count(refused) == 2
    assert text.count("unsigned task message (not run)") == len(forged)
    assert "no enabled plugin declares a consumer capital_pool/capital_data/evil" in text
    assert f"max_batches must be a whole number from 1 to {MAX_BATCHES}" in text
    assert "exited with 'exitcode" not in text and "WorkerLostError" not in text


def test_consume_round_takes_the_handler_from_the_manifest(
    capital_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "capital_config.json"))
    reset_runtime()
    try:
        settings = get_settings()
        with pytest.raises(ConfigurationError, match="declared: capital_pool/"):
            consume_round(settings, "capital_pool", "market_data", "capital_pool")
        with pytest.raises(ConfigurationError, match="a consumer nope/trading_results/"):
            consume_round(settings, "nope", "trading_results", "capital_pool")
        for bad in (0, MAX_BATCHES + 1, True, 1.0, "5"):
            with pytest.raises(StrictInputError, match="max_batches must be a whole number"):
                consume_round(settings, *DECLARED.values(), max_batches=bad)  # type: ignore[arg-type]
    finally:
        reset_runtime()
