"""Capital actions end to end through Celery: client -> Redis -> worker -> ledger -> result.

One worker node (``BENCH_CAPITAL_CONCURRENCY`` processes, default 8: the tasks mostly
wait on the pool lock and the broker) serves the ``capital_pool.*`` tasks; a client
process sends ``N`` contributions and withdrawals at once (``send_task``), each with
its own grant minted in the timed loop (as the API does per request; the worker verifies
it and the ledger audits the action), and waits for every result. Baseline, same
worker, same run: ``corec.ping`` tasks, i.e. Celery's own round trip with nothing
behind it. The invariants (``Ledger.verify``) are checked after each run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import RUNS, bench_env, emit, sized

N = sized("BENCH_CAPITAL_N", 1000, 100)
CONCURRENCY = sized("BENCH_CAPITAL_CONCURRENCY", 8, 8)
#: Extra worker options, e.g. "--prefetch-multiplier 4 --loglevel WARNING".
WORKER_ARGS = os.environ.get("BENCH_CAPITAL_WORKER_ARGS", "").split()
ROOT = Path(__file__).resolve().parent.parent


def client(kind: str, run: int) -> None:
    """In a fresh process (the Celery app reads its settings once): send, wait, time."""
    from celery.result import AsyncResult, ResultSet

    from corec_tasks.celery import app
    from plugins.capital_pool import grants

    key = grants.load_key()

    def send(kind: str, user: str, amount: str, idem: str) -> AsyncResult:
        grant = grants.mint(user, f"capital.{kind}", amount, idem, user_id=None,
                            username="operator:bench", key=key)  # fmt: skip
        kwargs = {"grant": grant}  # hidden from task events, as the API does
        return app.send_task(f"capital_pool.{kind}", args=[user, amount, idem], kwargs=kwargs,
                             kwargsrepr=grants.kwargs_repr(kwargs))  # fmt: skip

    if kind == "ping":
        t0 = time.perf_counter()
        pending = [app.send_task("corec.ping") for _ in range(N)]
    else:
        users = [f"m{i}" for i in range(10)]
        for u in users:
            seeded = send("contribute", u, "10000", f"seed-{run}-{u}").get(60)
            assert seeded["ok"], seeded
        t0 = time.perf_counter()
        pending = [
            send("withdraw" if i % 5 == 4 else "contribute", users[i % 10],
                 "50.00" if i % 5 == 4 else "100.00", f"r{run}-{i}")
            for i in range(N)
        ]  # fmt: skip
    # One pub/sub subscription for every result, not a .get() per task.
    results = ResultSet(pending).join_native(timeout=300)
    elapsed = time.perf_counter() - t0
    bad = [r for r in results if not r.get("ok")]
    print(json.dumps({"rate": N / elapsed, "failed": len(bad), "first": bad[:1]}))


def _run_client(kind: str, run: int) -> float:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_celery_capital_actions_per_s",
                          "--client", kind, str(run)], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"client failed: {out.stderr[-2000:]}")
    line = json.loads(out.stdout.strip().splitlines()[-1])
    if line["failed"]:
        raise SystemExit(f"{line['failed']} actions failed: {line['first']}")
    return float(line["rate"])


def main() -> None:
    with bench_env() as env:
        os.environ["COREC_CONFIG"] = str(ROOT / "corec_config.json")
        from corec_tasks.procs import ALL_QUEUES, managed, wait_for_workers, worker_cmd
        from corec_tasks.settings import load_settings
        from corec_tasks.storage.migrate import upgrade
        from plugins.capital_pool.config import load_config
        from plugins.capital_pool.ledger import Ledger

        upgrade(env.database_url)
        ledger = Ledger(load_settings().database_url, load_config())
        values, baseline = [], []
        worker = worker_cmd("bench-capital", CONCURRENCY, ALL_QUEUES, *WORKER_ARGS)
        with tempfile.TemporaryDirectory() as logs, managed(worker, Path(logs) / "worker.log"):
            wait_for_workers(1)
            _run_client("ping", -1)  # warm-up
            for run in range(RUNS):
                values.append(_run_client("actions", run))
                problems = ledger.verify()
                if problems:
                    raise SystemExit(f"invariants broken after run {run}: {problems}")
                baseline.append(_run_client("ping", run))
                print(f"  run {run}: {values[-1]:.0f} actions/s, ping {baseline[-1]:.0f}/s, "
                      "invariants hold", file=sys.stderr)  # fmt: skip
        ledger.close()
        emit("celery_capital_actions_per_s", values, "actions/s", baseline)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        client(sys.argv[2], int(sys.argv[3]))
    else:
        main()
