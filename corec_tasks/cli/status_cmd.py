"""``corec status``: servers, schema, streams and workers at a glance."""

from __future__ import annotations

from typing import Any

import click

from corec_tasks.cli.output import console, handle_errors, print_json, table
from corec_tasks.db import redact
from corec_tasks.settings import Settings, load_settings


def _redis(s: Settings) -> dict[str, Any]:
    from corec_tasks.redis_conn import redis_client

    url = redact(s.redis_url)
    if s.sentinels:  # no password shown; the master's address is what Sentinel says now
        hosts = ",".join(f"{h}:{p}" for h, p in s.sentinels)
        url = f"sentinel {s.env.redis_master} via {hosts}"
    try:
        client = redis_client(s, decode=True)
        info = client.info("server")
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        except Exception:
            policy = "unknown"
        return {"url": url, "ok": True, "version": info.get("redis_version"),
                "maxmemory_policy": policy}  # fmt: skip
    except Exception as exc:
        return {"url": url, "ok": False, "error": str(exc)}


def _postgres(s: Settings) -> dict[str, Any]:
    try:
        from corec_tasks.storage.migrate import current

        return {"url": redact(s.database_url), "ok": True, "revision": current(s.database_url)}
    except Exception as exc:
        return {"url": redact(s.database_url), "ok": False, "error": str(exc).splitlines()[0]}


def _workers(timeout: float) -> list[str]:
    from corec_tasks.celery import app

    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:
        return []
    return sorted(name for reply in replies for name in reply)


def collect(s: Settings, worker_timeout: float = 1.0) -> dict[str, Any]:
    """Everything `corec status` shows, as plain data."""
    out: dict[str, Any] = {
        "instance_id": s.instance_id,
        "config": str(s.config_path),
        "blocks": len(s.config.all_blocks()),
        "entities": s.config.total_entities,
        "redis": _redis(s),
        "postgres": _postgres(s),
    }
    if out["redis"]["ok"]:
        from corec_tasks.streams.persister import default_streams, lag

        try:
            out["streams"] = lag(s, list(default_streams(s)))
        except Exception as exc:
            out["streams"] = {"error": str(exc)}
        out["workers"] = _workers(worker_timeout)
        out["delivery"] = _delivery(s)
    return out


def _delivery(s: Settings) -> dict[str, Any]:
    """Unacknowledged broker tasks (Redis broker) and cycles that did not complete."""
    from corec_tasks.blocks.cycle import cycle_health
    from corec_tasks.redis_conn import redis_client
    from corec_tasks.unacked import unacked_stats

    try:
        client = redis_client(s)
        out: dict[str, Any] = {"cycles": cycle_health(s, client)}
        if not s.env.broker_url:
            out["unacked"] = unacked_stats(client, s.redis_prefix, s.env.visibility_timeout_s)
        return out
    except Exception as exc:
        return {"error": str(exc)}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--timeout", default=1.0, show_default=True, help="Seconds to wait for workers.")
@handle_errors
def status(as_json: bool, timeout: float) -> None:
    """Show servers, schema revision, stream backlog and live workers."""
    info = collect(load_settings(), timeout)
    if as_json:
        print_json(info)
        return
    console.print(
        f"instance [bold]{info['instance_id']}[/]: {info['blocks']} blocks, "
        f"{info['entities']:,} entities ({info['config']})"
    )
    rows = []
    for name in ("redis", "postgres"):
        item = info[name]
        detail = item.get("error") or ", ".join(
            f"{k}={v}" for k, v in item.items() if k not in ("url", "ok")
        )
        rows.append((name, "up" if item["ok"] else "DOWN", item["url"], detail))
    console.print(table("servers", ["server", "state", "url", "detail"], rows))
    streams = info.get("streams")
    if isinstance(streams, dict) and "error" not in streams:
        srows = [(name, *(v.get(k) for k in ("length", "pending", "last_id")))
                 for name, v in streams.items()]  # fmt: skip
        console.print(table("streams", ["stream", "length", "pending", "last id"], srows))
    workers = info.get("workers") or []
    console.print(f"workers: {', '.join(workers) if workers else 'none answered'}")
    _print_delivery(info.get("delivery") or {})


def _print_delivery(d: dict[str, Any]) -> None:
    if "error" in d:
        console.print(f"delivery: [red]{d['error']}[/]")
        return
    u = d.get("unacked")
    if u is not None:
        line = f"unacked broker tasks: {u['count']}"
        if u["count"]:
            line += f", oldest {u['oldest_age_s']}s"
        if u["stale"]:
            line += f", [red]{u['stale']} stale (their worker is gone; a sweep requeues them)[/]"
        console.print(line)
    c = d.get("cycles") or {}
    if c.get("overdue"):
        console.print(f"[red]cycles dispatched and never finished:[/] {c['overdue']}")
    if c.get("incomplete"):
        console.print(f"[red]cycles incomplete (blocks missing from bloques):[/] "
                      f"{c['incomplete']}")  # fmt: skip
