"""The Prometheus exporter on real Redis, PostgreSQL and Celery workers: after a block
cycle, a redirection, a dead letter, a contribution, trades and a tripped breaker,
one scrape of ``corec metrics serve`` shows every family with the values they made.
The alert rules and the names are checked against the same scrape."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pybreaker
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from corec_tasks.blocks.store import BlockStore
from corec_tasks.metrics.exporter import CorecCollector
from corec_tasks.modules.sync import redirect
from corec_tasks.settings import Settings, load_settings
from corec_tasks.streams.bus import Entry, StreamBus
from corec_tasks.streams.names import ALERTS
from plugins.capital_pool.service import CapitalPool, breaker
from plugins.pipeline.config import TradingConfig
from plugins.pipeline.cycle import Trading
from tests.conftest import DATA, ROOT
from tests.integration.own_redis import free_port
from tests.integration.workers import running_workers

pytestmark = pytest.mark.integration
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
EAGER = TradingConfig(strategy={"prediction_threshold": "0.00001", "exit_band": "0.000001"})

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _corec(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corec_tasks.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _scrape_served(log: Path) -> tuple[str, Samples, dict[str, str]]:
    """Start ``corec metrics serve`` (default host), scrape /metrics once, stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "corec_tasks.cli", "metrics", "serve", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    text = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    samples: Samples = {}
    types = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return text, samples, types


def _one(samples: Samples, name: str, **labels: str) -> float:
    found = [v for lab, v in samples.get(name, [])
             if all(lab.get(k) == x for k, x in labels.items())]  # fmt: skip
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def _trip(cb: pybreaker.CircuitBreaker) -> None:
    def down() -> None:
        raise psycopg.OperationalError("connection refused (test)")

    for _ in range(cb.fail_max):
        with contextlib.suppress(psycopg.OperationalError, pybreaker.CircuitBreakerError):
            cb.call(down)


def test_one_scrape_after_a_cycle_shows_every_family(
    capital_settings: Settings, pool: CapitalPool, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("COREC_CONFIG", str(DATA / "trading_config.json"))
    settings = load_settings()
    pool.contribute("alice", "10000", "a-1", principal="operator:test")
    trading = Trading(settings, EAGER)
    try:
        for i in range(6):
            for job in trading.prepare(f"m{i}").jobs:
                trading.process_asset(job)
    finally:
        trading.close()
    with running_workers(["metrics1"], tmp_path):
        run = _corec("blocks", "run", "--cycles", "1", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    store = BlockStore(settings)
    ids = store.ids()
    redirect(store, ids[0], ids[1], 10)
    bus = StreamBus(settings)
    bus.dead_letter("market_data", Entry("market_data", "1-1", b"{}", {b"d": b"{}"}),
                    "test: malformed", 3)  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url)
    client.set(settings.key("corec:beat:leader"), "token", px=15000)
    redis7 = int(str(client.info("server")["redis_version"]).split(".")[0]) >= 7
    db_breaker = breaker("capital_pool.db", pool.config)
    _trip(db_breaker)
    try:
        text, s, types = _scrape_served(tmp_path / "serve.log")
    finally:
        db_breaker.close()  # the breaker is per process: leave it closed for other tests
        client.close()
    (tmp_path / "scrape.txt").write_text(text)  # kept for a failure's reader

    # The engine's alerts for the same incidents, one each (issue 12).
    raised = [(a["payload"]["level"], a["payload"]["source"], a["payload"]["subject"])
              for a in bus.tail(ALERTS, 50)]  # fmt: skip
    assert raised.count(("warning", "stream.dead_letter", "market_data")) == 1, raised
    assert raised.count(("error", "breaker", "capital_pool.db")) == 1, raised

    # blocks: 2 sensor blocks of 1000 and 1 seguridad of 500, every one ran
    assert _one(s, "corec_blocks", group="sensor") == 2
    assert _one(s, "corec_blocks", group="seguridad") == 1
    assert sum(v for _, v in s["corec_block_entities"]) == 2500
    for _, v in s["corec_block_fitness_mean_ratio"] + s["corec_block_fitness_min_ratio"]:
        assert 0.0 <= v <= 1.0
    assert 0 < _one(s, "corec_block_load_ratio", group="sensor") <= 1
    assert sum(v for _, v in s["corec_block_last_run_entities"]) > 0
    assert {lab["group"] for lab, _ in s["corec_block_self_repairs_total"]} == {"sensor",
                                                                                "seguridad"}
    assert _one(s, "corec_redirections_total") == 1
    assert _one(s, "corec_redirected_entities_total") == 10
    # the cycle
    assert _one(s, "corec_cycles_dispatched_total") == 1
    assert _one(s, "corec_cycle_last_number") == 1
    assert _one(s, "corec_cycle_last_complete") == 1
    assert _one(s, "corec_cycle_last_blocks") == _one(s, "corec_cycle_last_persisted_blocks") == 3
    assert 0 < _one(s, "corec_cycle_last_wall_seconds") < 120
    assert abs(time.time() - _one(s, "corec_cycle_last_finished_timestamp_seconds")) < 300
    assert _one(s, "corec_cycles_open") == 0 and _one(s, "corec_cycles_overdue") == 0
    assert _one(s, "corec_celery_unacked_tasks") >= 0
    # streams and dead letters
    assert _one(s, "corec_stream_length_entries", stream="block_results") >= 3
    if redis7:  # Redis 6.2 (the embedded default) has no entries-added nor lag
        assert _one(s, "corec_stream_entries_added_total", stream="block_results") >= 3
        assert _one(s, "corec_stream_lag_entries", stream="block_results",
                    group="corec_bloques") == 0  # fmt: skip
    assert _one(s, "corec_stream_pending_entries", stream="block_results",
                group="corec_bloques") == 0  # fmt: skip
    assert _one(s, "corec_stream_maxlen_entries") == settings.env.stream_maxlen
    assert _one(s, "corec_dead_letters_total", stream="market_data") == 1
    assert _one(s, "corec_beat_leader") == 1
    assert 0 < _one(s, "corec_beat_leader_ttl_seconds") <= 15
    # the capital pool and the trading plugins
    assert 9000 < _one(s, "corec_capital_equity_usd") < 11000
    assert 0.9 < _one(s, "corec_capital_nav_per_unit_usd") < 1.1
    assert _one(s, "corec_capital_members") == 1
    assert 0 <= _one(s, "corec_capital_active_ratio") <= 0.6
    assert sum(v for _, v in s["corec_capital_phase"]) == 1
    assert _one(s, "corec_orders_created_total") > 0
    assert 0 < _one(s, "corec_order_fills_total") <= _one(s, "corec_orders_created_total")
    assert sum(v for _, v in s["corec_orders"]) == _one(s, "corec_orders_created_total")
    assert _one(s, "corec_breaker_open", breaker="capital_pool.db") == 1
    assert _one(s, "corec_breaker_processes", breaker="capital_pool.db", state="open") == 1
    assert _one(s, "corec_breaker_open", breaker="capital_pool.macro") == 0
    assert {lab["source"]: v for lab, v in s["corec_metrics_source_up"]} == {
        "corec": 1, "capital_pool": 1, "pipeline": 1}
    series = [(n, tuple(sorted(lab.items()))) for n, xs in s.items() for lab, _ in xs]
    assert len(series) == len(set(series))  # Prometheus rejects a duplicate series
    type_lines = [ln for ln in text.splitlines() if ln.startswith("# TYPE ")]
    assert len(type_lines) == len(set(type_lines))
    _check_names(types)
    _check_rules(set(s))
    _check_dashboard(set(s))


def _check_names(types: dict[str, str]) -> None:
    """Prometheus conventions: corec_ prefix, snake case, _total on counters (the parser
    strips it from the family name), base units spelled out in the name."""
    for name, kind in types.items():
        assert re.fullmatch(r"corec_[a-z0-9_]+", name), name
        assert not re.search(r"_(ms|milliseconds|minutes|hours|percent)$", name), name
        if re.search(r"(time|age|wall|duration|ttl)", name):
            assert name.endswith("_seconds"), name
        if re.search(r"(equity|cash|active_usd|nav)", name):
            assert name.endswith("_usd"), name  # money: the pool's currency
        if name.startswith(("corec_block_fitness", "corec_block_load")):
            assert name.endswith("_ratio"), name  # 0..1
        assert kind in ("counter", "gauge"), (name, kind)
        if kind == "counter":
            assert not name.endswith("_total"), name  # the sample itself is name_total


def _check_rules(exported: set[str]) -> None:
    """Every alert's expr parses as YAML and names only exported metrics."""
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"CorecCycleStalled", "CorecCycleIncomplete",
                                           "CorecDeadLettersGrowing", "CorecStreamBacklogNearCap",
                                           "CorecNoBeatLeader", "CorecNavFalling"}  # fmt: skip
    for rule in rules:
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values are not names
        names = set(re.findall(r"\bcorec_[a-z0-9_]+", expr))
        assert names and names <= exported, (rule["alert"], names - exported)


def _check_dashboard(exported: set[str]) -> None:
    """Every dashboard panel queries exported metrics; every family has a panel."""
    import json

    dash = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "corec.json").read_text())
    used: set[str] = set()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r'"[^"]*"', '""', target["expr"])
            names = set(re.findall(r"\bcorec_[a-z0-9_]+", expr))
            assert names and names <= exported, (panel["title"], names - exported)
            used |= names
    unused = exported - used - {"corec_metrics_collect_duration_seconds"}
    assert not unused, unused


def test_promtool_accepts_the_rules_and_the_config() -> None:
    if shutil.which("promtool") is None:
        print("promtool is not installed (apt-get install prometheus): rules checked by "
              "YAML and names only")  # fmt: skip
        pytest.skip("promtool not installed")
    for args in (["check", "rules", str(RULES)],
                 ["check", "config", str(RULES.parent / "prometheus.yml")]):  # fmt: skip
        res = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr


class _Broken:
    def collect(self) -> Any:
        raise RuntimeError("plugin bug")


def test_a_failing_source_is_said_and_the_rest_is_scraped(
    settings: Settings, redis_client: redis.Redis
) -> None:
    collector = CorecCollector(settings, [("broken", _Broken())], min_interval_s=0)
    families = {f.name: f for f in collector.collect()}
    up = {s.labels["source"]: s.value for s in families["corec_metrics_source_up"].samples}
    assert up == {"corec": 1, "broken": 0}
    assert "corec_beat_leader" in families and "corec_stream_length_entries" in families


def test_scrapes_within_the_interval_share_one_collection(
    settings: Settings, redis_client: redis.Redis
) -> None:
    collector = CorecCollector(settings, [], min_interval_s=60)
    first = {f.name: f.samples for f in collector.collect()}
    redis_client.set(settings.key("corec:beat:leader"), "t", px=15000)
    assert {f.name: f.samples for f in collector.collect()} == first
    # the shipped default (1 s): back-to-back scrapes share, a later one reads again
    default = CorecCollector(settings, [])
    assert default.min_interval_s == 1.0
    one = {f.name: f.samples for f in default.collect()}
    assert {f.name: f.samples for f in default.collect()} == one
    time.sleep(1.05)
    assert {f.name: f.samples for f in default.collect()} != one
    assert os.environ["COREC_REDIS_PREFIX"] == settings.redis_prefix


def test_self_repairs_are_counted_once_per_block_and_cycle(
    settings: Settings, redis_client: redis.Redis
) -> None:
    import numpy as np

    from corec_tasks.blocks.builtin import default_registry
    from corec_tasks.blocks.engine import Engine
    from corec_tasks.blocks.model import specs_from_config
    from corec_tasks.metrics import counters

    registry = default_registry()

    def broken(ctx: Any) -> Any:  # every reading faults: the block self-repairs
        return np.zeros(len(ctx), np.float32), np.ones(len(ctx), np.bool_)

    registry.register("sensor_swarm", broken, replace=True)
    store = BlockStore(settings, redis_client)
    store.create(specs_from_config(settings.config.all_blocks()))
    engine = Engine(settings, store, registry)
    ids, ts, expected = store.ids(), time.time(), 0
    for cycle in (1, 2):
        engine.run_blocks(ids, cycle, ts)
        expected += sum(int(m["last_result"]["repaired"]) for m in store.metas()
                        if m["spec"]["group"] == "sensor")  # fmt: skip
    engine.run_blocks(ids, 2, ts)  # a redelivery republishes: nothing counted again
    totals = counters.read(redis_client, settings.key(counters.TOTALS))
    assert expected > 0 and totals[counters.REPAIRS + "sensor"] == expected
    assert counters.REPAIRS + "seguridad" not in totals  # it did not repair anything


def test_the_exporter_listens_on_loopback_by_default(settings: Settings, tmp_path: Path) -> None:
    """`corec metrics serve` with no --host: its only listening socket is 127.0.0.1 (the
    figures include the pool's NAV and equity; compose opens it to its network on purpose)."""
    import psutil

    port = free_port()
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "corec_tasks.cli", "metrics", "serve", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        listening: list[str] = []
        while not listening:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
            listening = [c.laddr.ip for c in psutil.Process(proc.pid).net_connections("inet")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == port]  # fmt: skip
        assert listening == ["127.0.0.1"], listening
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
