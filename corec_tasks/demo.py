"""``make demo``: the foundation end to end on one machine.

Starts the embedded Redis and PostgreSQL (unless REDIS_URL and DATABASE_URL are
set), migrates, starts one Celery worker and beat, publishes events through the
streams bus (``corec_alerts``, and each enabled plugin's on its own streams, ``events``
in its plugin.json's ``demo``; a few malformed on purpose), waits while beat-driven persistence
lands them in the partitioned tables, shows the result; runs the seed's blocks, then
each enabled plugin's demo part (``demo`` in its plugin.json: the capital pool's
step, the pipeline's trading cycles), ends with a report (a table and a PNG chart,
``demo_report``) and stops everything it started.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text

from corec_tasks import services
from corec_tasks.db import make_engine, redact
from corec_tasks.discovery import resolve
from corec_tasks.errors import CorecError
from corec_tasks.manifest import Demo
from corec_tasks.procs import celery_cmd, managed, wait_for_workers, worker_cmd
from corec_tasks.settings import Settings, load_env, load_settings

console = Console()

Entry = tuple[str, dict[str, Any]]

#: The framework's own bad entry: ``corec_alerts`` knows no level "loud" (its schema).
MALFORMED: list[Entry] = [("corec_alerts", {"level": "loud", "source": "demo", "message": "x"})]


def _alerts(n: int) -> list[Entry]:
    return [("corec_alerts", {"level": "info", "source": "demo", "message": f"tick {i}"})
            for i in range(n)]  # fmt: skip


def _entries(demos: list[tuple[str, Demo]], n: int, seed: int
             ) -> tuple[list[Entry], list[Entry]]:  # fmt: skip
    """``n`` entries to publish and the malformed ones: each enabled plugin's (``events``
    in its manifest's ``demo``: the streams it owns) from an equal share of 90 %, then
    the framework's ``corec_alerts`` up to ``n``. The framework names no plugin stream."""
    sources = [(name, hooks.events) for name, hooks in demos if hooks.events]
    share = (n - n // 10) // len(sources) if sources else 0
    good: list[Entry] = []
    bad = list(MALFORMED)
    for name, ref in sources:
        entries, malformed = resolve(ref, name)(share, random.Random(f"{seed}:{name}"))
        good += list(entries)[:share]
        bad += list(malformed)
    return good + _alerts(n - len(good)), bad


def _landed(settings: Settings, since: float, keys: list[str]) -> int:
    """How many of the demo's own entries (``<stream>:<entry id>``) are in `eventos`:
    counting every row since the start also counted what the system itself published
    meanwhile (an alert, say), and reported 5,001 of 5,000."""
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            q = text("SELECT count(*) FROM eventos WHERE timestamp >= :since "
                     "AND entry_key = ANY(:keys)")  # fmt: skip
            return int(conn.execute(q, {"since": since, "keys": keys}).scalar_one())
    finally:
        engine.dispose()


def run(
    events: int = 5_000,
    cycles: int = 3,
    timeout: float = 120.0,
    seed: int = 7,
    trading_cycles: int = 20,
    report: Path | None = None,
) -> None:
    """The whole demo; raises CorecError with a clear message on failure."""
    env = load_env()
    embedded = not (env.redis_url and env.database_url)
    data_dir = env.data_dir
    started_services = False
    if embedded:
        before = services.status(data_dir)
        started_services = not all(
            isinstance(v, dict) and v["running"] for v in before.values()
        )
        console.rule("[bold]1. embedded services")
        state = services.up(data_dir)
        console.print(f"Redis      {redact(state.redis_url)}\n"
                      f"PostgreSQL {redact(state.database_url)}")
    try:
        _run(load_settings(), events, cycles, timeout, seed, trading_cycles, report)
    finally:
        if started_services:
            stopped = services.down(data_dir)
            console.print(f"stopped {', '.join(stopped)}")


def _run(settings: Settings, events: int, cycles: int, timeout: float, seed: int,
         trading_cycles: int, report: Path | None) -> None:  # fmt: skip
    # The demo's steps import what they use when they run (CLI start-up time), not a cycle.
    from corec_tasks.cli.output import table
    from corec_tasks.demo_report import trading_table, write_chart
    from corec_tasks.discovery import enabled
    from corec_tasks.keys import init as init_keys
    from corec_tasks.storage.migrate import current, upgrade
    from corec_tasks.storage.partitions import ensure_partitions

    # The demo's node holds the deployment's keys (made once in its data folder, as
    # `corec keys init` does; a key set in the environment is used as it is).
    made = [p.spec.env for p, how in init_keys(settings) if how == "made"]
    if made:
        console.print(f"made keys {', '.join(made)} in {settings.data_dir}")
    console.rule("[bold]2. migrate")
    # As the owner; then upkeep as the application role, the way beat runs it.
    upgrade(settings.migrate_database_url, app_url=settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        created = ensure_partitions(engine, months_ahead=settings.env.partitions_ahead)
    finally:
        engine.dispose()
    revision = current(settings.database_url)
    console.print(f"schema at {revision}; new partitions: {created or 'none'}")

    console.rule("[bold]3. Celery worker and beat")
    # The enabled plugins' demo steps ("demo" in their plugin.json); the first one that
    # rewrites the config writes the demo's own copy (the shipped config is unchanged).
    demos = [(p.name, p.manifest.demo) for p in enabled(settings) if p.manifest.demo]
    for name, hooks in demos:
        if hooks.config:
            demo_config = resolve(hooks.config, name)(settings, settings.data_dir / "demo")
            settings = load_settings(demo_config)
            console.print(f"demo config {demo_config} (written by plugin {name}; "
                          "the shipped config is unchanged)")  # fmt: skip
            break
    else:
        demo_config = settings.config_path
    report_hook = next(((n, h.report) for n, h in demos if h.report), None)
    # A fresh beat schedule each run: a 5-minute job (block or trading cycle) long due
    # since the last demo would otherwise fire in the middle of this one.
    for old in settings.data_dir.glob("demo-beat-schedule*"):
        old.unlink()
    logs = settings.data_dir / "logs"
    child_env = dict(os.environ, COREC_PERSIST_EVERY_S="1", COREC_CONFIG=str(demo_config))
    worker = worker_cmd(f"demo-{os.getpid()}", concurrency=2)
    beat = celery_cmd("beat", "--loglevel", "INFO",
                      "--schedule", str(settings.data_dir / "demo-beat-schedule"))  # fmt: skip
    with managed(worker, logs / "worker.log", child_env), managed(
        beat, logs / "beat.log", child_env
    ):
        node = wait_for_workers(1, 60)[0]
        console.print(f"worker [bold]{node}[/] answered; beat persists streams every 1s "
                      f"(logs in {logs})")  # fmt: skip
        _streams(settings, *_entries(demos, events, seed), timeout)
        block_records = _blocks(settings, cycles, timeout)
        for name, hooks in demos:  # each enabled plugin's own demo step (capital pool)
            if hooks.step:
                resolve(hooks.step, name)(settings, timeout, console)

        if report_hook is None:
            console.print("no enabled plugin brings a demo report: no trading section")
            return
        console.rule(f"[bold]10. trading (plugin {report_hook[0]}): allocation -> prediction "
                     "-> pipeline -> strategy -> broker")  # fmt: skip
        run_id = os.urandom(4).hex()
        run_trading = resolve(report_hook[1], report_hook[0])
        start, rows = run_trading(settings, trading_cycles, timeout, run_id, console)

        console.rule("[bold]11. report")
        console.print(trading_table(rows, start["nav"], start["equity"]))
        errors = [(r.cycle, e) for r in rows for e in r.errors]
        if errors:
            console.print(table("assets a cycle could not trade", ["cycle", "error"], errors))
        opened, closed = sum(r.opened for r in rows), sum(r.closed for r in rows)
        console.print(f"{opened} position(s) opened, {closed} closed; NAV {start['nav']} -> "
                      f"{rows[-1].nav if rows else start['nav']}")  # fmt: skip
        nav = [(0, float(start["nav"]))] + [(r.cycle, float(r.nav)) for r in rows]
        fitness = [(int(r["cycle"]), float(r["mean_fitness"])) for r in block_records]
        png = write_chart(report or settings.data_dir / "demo_report.png", nav, fitness)
        console.print(f"chart (NAV per trading cycle, block fitness per cycle): {png.resolve()}")
    console.rule("[bold]12. stopped worker and beat")


def _streams(settings: Settings, entries: list[Entry], malformed: list[Entry],
             timeout: float) -> None:  # fmt: skip
    from corec_tasks.streams.bus import StreamBus

    console.rule("[bold]4. publish through the streams bus")
    bus = StreamBus(settings)
    dead_before = _dead_count(settings)
    since = time.time() - 1
    events = len(entries)
    batch: dict[str, list[dict[str, Any]]] = {}
    for stream, payload in entries:
        batch.setdefault(stream, []).append(payload)
    keys: list[str] = []
    for stream, payloads in batch.items():
        keys += [f"{stream}:{i}" for i in bus.publish_many(stream, payloads)]
        console.print(f"  {stream:<16} {len(payloads):>7,} events")
    for stream, payload in malformed:
        bus.publish(stream, payload)
    console.print(f"  + {len(malformed)} malformed messages (expected in corec_dead_letter)")

    console.rule("[bold]5. persisting (stream -> PostgreSQL, ack after commit)")
    landed = 0
    with Progress(TextColumn("eventos"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:  # fmt: skip
        task = bar.add_task("landed", total=events)
        deadline = time.monotonic() + timeout
        while landed < events and time.monotonic() < deadline:
            landed = _landed(settings, since, keys)
            bar.update(task, completed=landed)
            time.sleep(0.3)
    if landed < events:
        raise CorecError(f"only {landed} of {events} events landed within {timeout:.0f}s")
    while _dead_count(settings) - dead_before < len(malformed):
        if time.monotonic() > deadline:
            raise CorecError("the malformed messages did not reach corec_dead_letter")
        time.sleep(0.2)
    _report(settings, since, bus.dead_letters(len(malformed)))


def _census(store: Any) -> npt.NDArray[np.uint32]:
    """Every entity id of every block, sorted (for the conservation check)."""
    loaded = store.load_many(store.ids())
    return np.sort(np.concatenate([s.block.entities.ids for s in loaded]))


def _blocks(settings: Settings, cycles: int, timeout: float) -> list[dict[str, Any]]:
    """Sections 6-8; the per-cycle records (with ``mean_fitness``) for the report."""
    from corec_tasks.cli.blocks_cmd import group_summary, run_cycles
    from corec_tasks.cli.output import table
    from corec_tasks.modules.sync import redirect
    from corec_tasks.nucleus import Nucleus

    console.rule("[bold]6. symbiotic blocks: the seed's sample config")
    nucleus = Nucleus(settings)
    nucleus.initialize()
    store = nucleus.store
    reg = nucleus.modules["registry"].run()
    console.print(f"[ModuloRegistro] {reg['blocks']} blocks ({reg['registered']} new), "
                  f"{settings.config.total_entities:,} entities")  # fmt: skip
    before = _census(store)
    records: list[dict[str, Any]] = []
    with Progress(TextColumn("cycles"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:  # fmt: skip
        task = bar.add_task("cycles", total=cycles)
        for _ in range(cycles):
            records += run_cycles(nucleus, 1, None, timeout, quiet=True)
            bar.advance(task)
    console.print(table("cycles (2 worker processes; results landed in `bloques`)",
                        ["cycle", "blocks", "wall s", "rows to bloques", "mean fitness"],
                        [(r["cycle"], r["ran"], r["client_wall_s"], r["persisted"],
                          r["mean_fitness"]) for r in records]))  # fmt: skip
    groups = group_summary(store.metas())
    cols = ["group", "canal", "processor", "blocks", "entities", "fitness_mean", "fitness_min",
            "carga"]  # fmt: skip
    console.print(table("fitness per block group", cols, [[g[c] for c in cols] for g in groups]))

    console.rule("[bold]7. redirection (ModuloSincronizacion)")
    report = nucleus.modules["sync"].run()
    moves = report.get("moves", [])
    if not moves:
        # Nothing qualifies on its own (fitness < 0.3 and load < 0.2): show the operator's
        # redirect (the seed's `corec block-redirect`), weakest block to the strongest.
        metas = sorted(store.metas(), key=lambda m: float(m["fitness"]))
        src, dst = metas[0]["spec"]["id"], metas[-1]["spec"]["id"]
        moved = redirect(store, src, dst, 100)
        console.print(f"no block qualified for automatic redirection; `corec blocks redirect "
                      f"{src} {dst} 100` moved {moved} entities")  # fmt: skip
    else:
        for move in moves:
            console.print(f"[Sincronizacion] Entidades redirigidas: {move}")
    after = _census(store)
    if not np.array_equal(before, after):
        raise CorecError("entity ids changed across cycles and redirection")
    console.print(f"conserved: {after.size:,} entities, the same ids, each once")

    console.rule("[bold]8. audit (IsolationForest over block metrics)")
    audit = nucleus.modules["audit"].run()
    found = audit.get("anomalies", [])
    console.print(f"checked {audit.get('checked')} blocks; {len(found)} alert(s) on corec_alerts")
    for item in found[:5]:
        console.print(f"  {item.get('block_id')}: {item.get('reason')}")
    nucleus.stop()
    return records


def _dead_count(settings: Settings) -> int:
    from corec_tasks.redis_conn import redis_client
    from corec_tasks.streams.names import DEAD_LETTER

    return int(redis_client(settings).xlen(settings.key(DEAD_LETTER)))


def _report(settings: Settings, since: float, dead: list[dict[str, Any]]) -> None:
    from corec_tasks.cli.output import table
    from corec_tasks.storage.partitions import list_partitions

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            per_canal = conn.execute(text(
                "SELECT canal, tableoid::regclass::text AS part, count(*) FROM eventos "
                "WHERE timestamp >= :since GROUP BY 1, 2 ORDER BY 1"), {"since": since}).all()
        parts = list_partitions(engine)
    finally:
        engine.dispose()
    console.print(table("events landed in `eventos`", ["canal", "partition", "rows"],
                        [(c, p, f"{n:,}") for c, p, n in per_canal]))  # fmt: skip
    console.print(table("partitions", ["table", "partition", "rows"],
                        [(p.table, p.name, f"{p.rows:,}") for p in parts]))  # fmt: skip
    console.print(table("corec_dead_letter", ["stream", "reason"],
                        [(d.get("stream"), d.get("reason")) for d in dead]))  # fmt: skip
