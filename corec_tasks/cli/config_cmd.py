"""``corec config check``."""

from __future__ import annotations

from pathlib import Path

import click

from corec_tasks.cli.output import console, handle_errors, print_json, table
from corec_tasks.config import load_config, queue_for_channel
from corec_tasks.settings import Settings, load_env


@click.group()
def config() -> None:
    """Inspect and validate corec_config.json."""


@config.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def check(path: Path | None, as_json: bool) -> None:
    """Validate PATH (default: the configured file) and every enabled plugin's manifest
    and own config; every error names its key.

    Exits 1 on the first invalid config, after listing all of its problems.
    """
    from corec_tasks.plugin_info import check_plugins

    env = load_env()
    path = path or env.config_path
    cfg = load_config(path)
    specs = check_plugins(Settings(env, cfg, path))
    blocks = cfg.all_blocks()
    if as_json:
        print_json(
            {
                "ok": True,
                "path": str(path),
                "instance_id": cfg.instance_id,
                "blocks": len(blocks),
                "entities": cfg.total_entities,
                "plugins": [s.name for s in specs],
            }
        )
        return
    rows = [
        (b.id, b.canal, queue_for_channel(b.canal), f"{b.entidades:,}", b.entidades_por_bloque)
        for b in blocks
    ]
    columns = ["block", "canal", "queue", "entities", "per block"]
    console.print(table(f"{path}: valid", columns, rows))
    console.print(
        f"{len(blocks)} blocks, {cfg.total_entities:,} entities, instance {cfg.instance_id}"
    )
    names = ", ".join(f"{s.name} {s.manifest.version}" for s in specs) or "none"
    console.print(f"enabled plugins (manifest and own config valid): {names}")
