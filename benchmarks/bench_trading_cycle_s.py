"""One full trading cycle for 50 instruments: on 2 worker processes vs in one process.

A cycle is allocation (capital pool) -> prediction (market, macro and predictor feeds
tick) -> pipeline -> strategy -> broker for every instrument, fills published to
``trading_results``. Two identical deployments (same seeds and cycle keys, so the same
market and the same orders) run the same cycles: value, the cycle fanned across one
worker node of 2 processes (``corec trading cycle``); baseline, sequentially in one
process (``--inline``). Both count from the preparation to the last asset's result;
the strategy trades on small signals so orders are placed and filled every cycle.
``BENCH_TRADING_LATENCY_MS`` gives the paper broker an exchange round trip (default 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RUNS, bench_env, emit, sized

ROOT = Path(__file__).resolve().parent.parent
INSTRUMENTS = sized("BENCH_TRADING_INSTRUMENTS", 50, 10)
PER_TASK = sized("BENCH_TRADING_PER_TASK", 4, 4)
#: Simulated exchange round trip of the paper broker (0: instant, the default).
LATENCY_MS = float(os.environ.get("BENCH_TRADING_LATENCY_MS", "0"))


def _configs(folder: Path) -> Path:
    """A deployment config trading INSTRUMENTS symbols, with one capital slot each."""
    feeds = json.loads((ROOT / "plugins/feeds/config.json").read_text())
    feeds["market"]["symbols"] = [f"SYM{i:02d}" for i in range(INSTRUMENTS)]
    feeds["market"]["initial_prices"] = {}
    (folder / "feeds.json").write_text(json.dumps(feeds))
    pipeline = json.loads((ROOT / "plugins/pipeline/config.json").read_text())
    pipeline.update(max_parallel_assets=INSTRUMENTS, assets_per_task=PER_TASK,
                    broker={"latency_ms": LATENCY_MS},
                    strategy={"prediction_threshold": "0.00001", "exit_band": "0.000001"})
    (folder / "pipeline.json").write_text(json.dumps(pipeline))
    capital = (ROOT / "plugins/capital_pool/capital_pool.yaml").read_text()
    (folder / "capital.yaml").write_text(capital.replace("slots: 5", f"slots: {INSTRUMENTS}"))
    corec = json.loads((ROOT / "tests/data/small_config.json").read_text())
    corec["plugins"] = [
        {"name": "capital_pool", "enabled": True, "config_path": str(folder / "capital.yaml")},
        {"name": "feeds", "enabled": True, "config_path": str(folder / "feeds.json")},
        {"name": "pipeline", "enabled": True, "config_path": str(folder / "pipeline.json")},
        *({"name": n, "enabled": True} for n in ("aaa", "broker", "core")),  # it requires them
    ]  # fmt: skip
    (folder / "corec_config.json").write_text(json.dumps(corec))
    return folder / "corec_config.json"


def client(mode: str, key: str) -> None:
    """In a fresh process (Celery's app reads its settings once): one cycle, timed."""
    from plugins.pipeline.cli import run_cycle

    # client_wall_s: from the preparation to the last asset's result, either mode.
    print(json.dumps(run_cycle(key, inline=mode == "inline", timeout=600)))


def _cycle(mode: str, key: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_trading_cycle_s", "--client",
                          mode, key], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"cycle {key} failed: {out.stderr[-2000:]}")
    summary: dict = json.loads(out.stdout.strip().splitlines()[-1])
    if summary["assets"] != INSTRUMENTS or summary["errors"]:
        raise SystemExit(f"cycle {key} incomplete: {summary}")
    return summary


def _deployment(folder: Path) -> dict[str, str]:
    """Migrate the bench_env's database, fund its pool; its environment for children."""
    from corec_tasks.settings import load_settings
    from corec_tasks.storage.migrate import upgrade
    from plugins.capital_pool.config import load_config
    from plugins.capital_pool.service import CapitalPool

    upgrade(os.environ["DATABASE_URL"])
    pool = CapitalPool(load_settings(), load_config(folder / "capital.yaml"))
    pool.contribute("bench", "1000000", "bench-seed", principal="operator:bench")
    pool.close()
    return dict(os.environ)


def _verify(env: dict[str, str], folder: Path) -> None:
    from corec_tasks.keyfile import key_file
    from plugins.capital_pool import ledger_key
    from plugins.capital_pool.config import load_config
    from plugins.capital_pool.ledger import Ledger

    # That deployment's own ledger key (each bench_env has its data folder and keys).
    key = key_file(Path(env["COREC_DATA_DIR"]) / ledger_key.KEY_FILE, "ledger key")
    ledger = Ledger(env["DATABASE_URL"], load_config(folder / "capital.yaml"), key=key)
    problems = ledger.verify()
    ledger.close()
    if problems:
        raise SystemExit(f"capital ledger broken: {problems}")


def main() -> None:
    """Two identical deployments (same seeds, same cycle keys, so the same market and
    the same decisions): one cycles on the workers, the other in one process."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["COREC_CONFIG"] = str(_configs(folder))
        with bench_env():
            fanned_env = _deployment(folder)
            with bench_env():
                inline_env = _deployment(folder)
                from corec_tasks.procs import managed, wait_for_workers, worker_cmd

                values, baseline = [], []
                worker = worker_cmd("bench-trading", concurrency=2)
                with managed(worker, folder / "worker.log", fanned_env):
                    os.environ.update(fanned_env)
                    wait_for_workers(1)
                    os.environ.update(inline_env)
                    # Warm-up: imports, market history, first predictions, on both.
                    _cycle("celery", "warm-up", fanned_env)
                    _cycle("inline", "warm-up", inline_env)
                    for run in range(RUNS):
                        fanned = _cycle("celery", f"r{run}", fanned_env)
                        inline = _cycle("inline", f"r{run}", inline_env)
                        values.append(fanned["client_wall_s"])
                        baseline.append(inline["client_wall_s"])
                        print(f"  run {run}: 2 workers {fanned['client_wall_s']:.3f} s, one "
                              f"process {inline['client_wall_s']:.3f} s; actions "
                              f"{fanned['actions']} / {inline['actions']}",
                              file=sys.stderr)  # fmt: skip
                _verify(fanned_env, folder)
                _verify(inline_env, folder)
        emit("trading_cycle_s", values, "s", baseline)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3])
    else:
        main()
