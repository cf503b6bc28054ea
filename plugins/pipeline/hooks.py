"""The pipeline's hooks in its plugin.json: the trading cycle's beat interval and
its step of ``corec demo`` (full trading cycles on the workers, NAV after each).

The shipped pipeline config (``plugins/pipeline/config.json``) trades only on
predictions above 0.05 %, which a few simulated minutes rarely give. The demo does not
change that file: it writes its own copy of the config under ``<data dir>/demo/``,
where the ``pipeline`` plugin's ``config_path`` points at the same pipeline options
with an eager strategy (``DEMO_STRATEGY``), and runs the worker and beat on it
(``COREC_CONFIG``). Everything else in the copy is the user's config as is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from corec_tasks.demo_report import TradingRow
from corec_tasks.errors import CorecError
from corec_tasks.folders import ensure_dir
from corec_tasks.settings import Settings

#: Trade on small signals, so a short demo opens and closes positions.
DEMO_STRATEGY = {"prediction_threshold": "0.00001", "exit_band": "0.000001"}


def cycle_every_s(settings: Settings) -> float:
    """Seconds between trading cycles (seed 003 §7): ``global_latency`` minutes."""
    from plugins.pipeline.config import trading_config

    return 60.0 * trading_config(settings).global_latency


def write_demo_config(settings: Settings, out_dir: Path) -> Path:
    """A copy of the config file whose ``pipeline`` entry uses the eager strategy;
    every plugin path made absolute so the copy works from ``out_dir``. The demo says
    it: the strategy trades on small signals ``DEMO_STRATEGY``."""
    from plugins.pipeline.config import PLUGIN, trading_config

    shipped = trading_config(settings)
    eager = shipped.model_copy(update={"strategy": {**shipped.strategy, **DEMO_STRATEGY}})
    ensure_dir(out_dir)
    pipeline_path = (out_dir / "pipeline.json").resolve()
    pipeline_path.write_text(eager.model_dump_json(indent=2) + "\n")

    raw: dict[str, Any] = json.loads(settings.config_path.read_text(encoding="utf-8"))
    bases = [settings.config_path.resolve().parent, Path.cwd()]
    plugins: list[dict[str, Any]] = raw.setdefault("plugins", [])
    for entry in plugins:
        cfg = entry.get("config_path")
        if cfg:
            found = [b / cfg for b in bases if (b / cfg).is_file()]
            if found:
                entry["config_path"] = str(found[0].resolve())
    mine = [p for p in plugins if p.get("name") == PLUGIN]
    if not mine:
        mine = [{"name": PLUGIN}]
        plugins.extend(mine)
    mine[0].update(enabled=True, config_path=str(pipeline_path))
    path = (out_dir / "corec_config.json").resolve()
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return path


def run_trading(
    settings: Settings, cycles: int, timeout: float, run: str, console: Console
) -> tuple[dict[str, Any], list[TradingRow]]:
    """``cycles`` trading cycles through the workers; the pool's status before them and
    one row per cycle, each read after the pool applied that cycle's fills."""
    from plugins.capital_pool.consumer import consume_once
    from plugins.capital_pool.service import CapitalPool
    from plugins.capital_pool.settings import capital_config
    from plugins.pipeline.cli import run_cycle

    pool = CapitalPool(settings, capital_config(settings))
    rows: list[TradingRow] = []
    try:
        start = _status(pool)
        with Progress(TextColumn("trading cycles"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.description}"),
                      console=console) as bar:  # fmt: skip
            task = bar.add_task("", total=cycles)
            for i in range(1, cycles + 1):
                summary = run_cycle(f"demo-{run}-{i}", timeout=timeout, settings=settings)
                # Beat's capital_pool consumers run every second; consuming here too
                # means the NAV below already includes this cycle's closes.
                consume_once(pool)
                _wait_applied(settings, timeout)
                status = _status(pool)
                acts = summary["actions"]
                rows.append(TradingRow(
                    cycle=i, opened=acts.get("open", 0), closed=acts.get("close", 0),
                    idle=acts.get("none", 0), profit=summary["profit"], nav=status["nav"],
                    equity=status["equity"], wall_s=float(summary["wall_s"]),
                    errors=tuple(f"{e.get('symbol')}: {e.get('error') or e.get('reason')}"
                                 for e in summary["errors"]),
                ))  # fmt: skip
                bar.update(task, advance=1, description=f"NAV {status['nav']}")
    finally:
        pool.close()
    return start, rows


def _status(pool: Any) -> dict[str, Any]:
    status: dict[str, Any] = pool.status(use_cache=False)
    if not status.get("ok"):
        raise CorecError(f"capital_pool status failed: {status.get('error')}")
    return status


def _wait_applied(settings: Settings, timeout: float) -> None:
    """Until every trading result published so far is applied (or dead-lettered) by the
    pool: its consumer group has read up to the stream's end and has nothing pending."""
    from corec_tasks.redis_conn import redis_client
    from plugins.capital_pool.consumer import GROUP
    from plugins.trading.channels import TRADING_RESULTS

    client = redis_client(settings, decode=True)
    stream = settings.key(TRADING_RESULTS)
    deadline = time.monotonic() + timeout
    try:
        while True:
            last = client.xinfo_stream(stream)["last-generated-id"]
            groups = {g["name"]: g for g in client.xinfo_groups(stream)}
            group = groups.get(GROUP)
            if group and group["pending"] == 0 and group["last-delivered-id"] == last:
                return
            if time.monotonic() > deadline:
                raise CorecError("the capital pool did not apply the trading results in time")
            time.sleep(0.1)
    finally:
        client.close()
