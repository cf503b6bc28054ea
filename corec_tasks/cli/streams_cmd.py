"""``corec streams publish|tail|dead-letter|persist``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from corec_tasks.cli.output import console, handle_errors, print_json, settings, table
from corec_tasks.errors import StreamError


@click.group()
def streams() -> None:
    """The Redis Streams bus between plugins."""


@streams.command("publish")
@click.argument("stream")
@click.argument("payload")
@click.option("--count", default=1, show_default=True, help="Publish the payload N times.")
@handle_errors
def publish(stream: str, payload: str, count: int) -> None:
    """Publish a JSON PAYLOAD on STREAM (validated against the stream's schema first)."""
    from corec_tasks.streams.bus import StreamBus
    from corec_tasks.streams.schemas import validate_payload

    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise StreamError(f"payload is not valid JSON: {exc.msg} at column {exc.colno}") from None
    validate_payload(stream, payload.encode())
    bus = StreamBus(settings())
    ids = bus.publish_many(stream, [data] * count) if count > 1 else [bus.publish(stream, data)]
    console.print(f"published {len(ids)} on {stream} (last id {ids[-1]})", highlight=False)


@streams.command("tail")
@click.argument("stream")
@click.option("-n", "count", default=10, show_default=True, help="How many entries.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def tail(stream: str, count: int, as_json: bool) -> None:
    """Show the newest entries of STREAM."""
    from corec_tasks.streams.bus import StreamBus

    entries = StreamBus(settings()).tail(stream, count)
    if as_json:
        print_json(entries)
        return
    rows = [(e.get("id"), e.get("instance_id", ""), e.get("payload")) for e in entries]
    console.print(table(f"{stream}: newest {len(rows)}", ["id", "instance", "payload"], rows))


@streams.command("dead-letter")
@click.option("-n", "count", default=20, show_default=True, help="How many entries.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def dead_letter(count: int, as_json: bool) -> None:
    """Show messages that failed validation or delivery, with the reason."""
    from corec_tasks.streams.bus import StreamBus

    entries = StreamBus(settings()).dead_letters(count)
    if as_json:
        print_json(entries)
        return
    rows = [
        (e.get("stream"), e.get("id"), e.get("deliveries"), e.get("reason"), e.get("payload"))
        for e in entries
    ]
    console.print(
        table("corec_dead_letter", ["stream", "id", "deliveries", "reason", "payload"], rows)
    )


@streams.command("persist")
@click.option("--loop", is_flag=True, help="Keep persisting until interrupted.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between rounds.")
@handle_errors
def persist(loop: bool, interval: float) -> None:
    """Move stream entries into PostgreSQL `eventos` now (workers do this on beat)."""
    from corec_tasks.streams.persister import persist_once

    s = settings()
    while True:
        stats = persist_once(s)
        console.print(json.dumps(asdict(stats), default=str), highlight=False)
        if not loop:
            return
        time.sleep(interval)
