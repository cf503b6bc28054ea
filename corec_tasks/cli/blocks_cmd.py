"""``corec blocks list|show|register|run|redirect|sync|audit``."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import click
import numpy as np

from corec_tasks.cli.output import console, handle_errors, print_json, settings, table
from corec_tasks.errors import CorecError


def _nucleus() -> Any:
    from corec_tasks.nucleus import Nucleus

    nucleus = Nucleus(settings())
    nucleus.initialize()
    return nucleus


def group_summary(metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per config block (group): shards, entities, fitness and load."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for meta in metas:
        groups[meta["spec"]["group"]].append(meta)
    out = []
    for group, items in groups.items():
        fitness = [float(m["fitness"]) for m in items]
        out.append({
            "group": group,
            "canal": items[0]["spec"]["canal"],
            "processor": items[0]["spec"]["processor"],
            "blocks": len(items),
            "entities": sum(int(m["num_entidades"]) for m in items),
            "fitness_mean": round(float(np.mean(fitness)), 4),
            "fitness_min": round(min(fitness), 4),
            "carga": items[0]["spec"]["carga"],
            "last_cycle": max(int(m["last_cycle"]) for m in items),
        })  # fmt: skip
    return out


@click.group()
def blocks() -> None:
    """Symbiotic blocks: their state in Redis, cycles, redirection and audit."""


@blocks.command("list")
@click.option("--all", "every", is_flag=True, help="One row per block, not per group.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def list_(every: bool, as_json: bool) -> None:
    """Blocks with their fitness, load and entity count."""
    from corec_tasks.blocks.store import BlockStore

    metas = BlockStore(settings()).metas()
    if every:
        rows = [{"id": m["spec"]["id"], "group": m["spec"]["group"], "canal": m["spec"]["canal"],
                 "entities": m["num_entidades"], "fitness": round(float(m["fitness"]), 4),
                 "carga": m["spec"]["carga"], "last_cycle": m["last_cycle"],
                 "version": m["version"]} for m in metas]  # fmt: skip
    else:
        rows = group_summary(metas)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no blocks registered: run `corec blocks register`")
        return
    cols = list(rows[0])
    console.print(table(f"{len(metas)} blocks", cols, [[r[c] for c in cols] for r in rows]))


@blocks.command("show")
@click.argument("block_id")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def show(block_id: str, as_json: bool) -> None:
    """One block: spec, version, fitness and its entities' state."""
    from corec_tasks.blocks.store import BlockStore

    stored = BlockStore(settings()).load(block_id)
    e = stored.block.entities
    info = {
        "spec": stored.block.spec.to_dict(),
        "version": stored.version,
        "fitness": stored.block.fitness,
        "last_cycle": stored.last_cycle,
        "entities": len(e),
        "active": int(e.active.sum()),
        "failing": int((e.failures > 0).sum()),
        "ids": [int(e.ids.min()), int(e.ids.max())] if len(e) else [],
        "value_mean": float(e.value.mean()) if len(e) else None,
        "last_result": stored.last_result,
    }
    if as_json:
        print_json(info)
        return
    console.print(table(block_id, ["field", "value"], [(k, v) for k, v in info.items()]))


@blocks.command("register")
@handle_errors
def register() -> None:
    """Create the configured blocks in Redis (existing ones are kept)."""
    report = _nucleus().modules["registry"].run()
    console.print(f"registered {report['registered']} new; {report['blocks']} blocks in all")


@blocks.command("run")
@click.option("--cycles", default=1, show_default=True, help="How many cycles.")
@click.option("--chunk", default=None, type=int, help="Blocks per task message.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait per cycle.")
@click.option("--json", "as_json", is_flag=True, help="Print the cycle records as JSON.")
@handle_errors
def run(cycles: int, chunk: int | None, timeout: float, as_json: bool) -> None:
    """Dispatch cycles to the Celery workers and wait for each to land in `bloques`.

    Exits 1 if a cycle finished incomplete (some of its blocks are not in `bloques`).
    """
    records = run_cycles(_nucleus(), cycles, chunk, timeout, quiet=as_json)
    if as_json:
        print_json(records)
    bad = [r for r in records if not r.get("complete", True)]
    if bad:
        raise CorecError("; ".join(
            f"cycle {r['cycle']} is incomplete: {r['persisted']} of {r['blocks']} blocks in "
            f"bloques ({r.get('overtaken', 0)} overtaken by later cycles)" for r in bad)
            + "; an alert is on corec_alerts")  # fmt: skip


def run_cycles(
    nucleus: Any, cycles: int, chunk: int | None, timeout: float, quiet: bool = False
) -> list[dict[str, Any]]:
    """Dispatch ``cycles`` cycles one after the other; return each cycle's record."""
    from celery.result import AsyncResult

    from corec_tasks.celery import app

    if nucleus.store.count() == 0:
        nucleus.modules["registry"].run()
    chunk = chunk or nucleus.settings.env.block_chunk
    records = []
    for _ in range(cycles):
        started = time.monotonic()
        sent = nucleus.modules["execution"].run(chunk=chunk)
        if sent["task_id"] is None:
            raise CorecError("no blocks to run")
        try:
            record = AsyncResult(sent["task_id"], app=app).get(timeout=timeout, interval=0.05)
        except Exception as exc:
            raise CorecError(f"cycle {sent['cycle']} did not finish: {exc!r} "
                             "(are workers running? `make workers`)") from None  # fmt: skip
        record["client_wall_s"] = round(time.monotonic() - started, 4)
        # A worker still on older code records no "complete": derive it the same way.
        record.setdefault("complete", record.get("persisted", 0) >= record.get("blocks", 0))
        records.append(record)
        if not quiet:
            console.print(f"cycle {record['cycle']}: {record['ran']} blocks in "
                          f"{record['client_wall_s']:.2f}s, {record['persisted']} rows to bloques, "
                          f"mean fitness {record['mean_fitness']}"
                          + ("" if record["complete"] else " [red]INCOMPLETE[/]"))  # fmt: skip
    return records


@blocks.command("redirect")
@click.argument("src")
@click.argument("dst")
@click.argument("count", type=int)
@handle_errors
def redirect(src: str, dst: str, count: int) -> None:
    """Move COUNT entities from block SRC to block DST (atomic, conserving ids)."""
    from corec_tasks.blocks.store import BlockStore
    from corec_tasks.modules.sync import redirect as do_redirect

    moved = do_redirect(BlockStore(settings()), src, dst, count)
    console.print(f"[Sincronizacion] Entidades redirigidas: {moved} from {src} to {dst}")


@blocks.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def sync(as_json: bool) -> None:
    """Run the sync module now: splits, merges, redirections."""
    report = _nucleus().modules["sync"].run()
    if as_json:
        print_json(report)
    else:
        console.print(report)


@blocks.command("audit")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def audit(as_json: bool) -> None:
    """Run the audit module now: anomalies become alerts on corec_alerts."""
    report = _nucleus().modules["audit"].run()
    if as_json:
        print_json(report)
    else:
        console.print(report)
