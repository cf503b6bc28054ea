"""Capital ledger throughput: money actions per second directly on the ledger.

``PROCS`` processes each run single actions (80% contributions, 20% withdrawals, each
its own transaction and idempotency key) against one pool, as workers on many nodes
would; every action takes the pool lock, so this is the serialised rate. Baseline, in
the same run and processes: the bare floor of one transaction per action (lock the
pool row, insert one row, commit), i.e. what PostgreSQL's commit alone allows. The
invariants (``Ledger.verify``) are checked after each run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

from benchmarks._common import RUNS, bench_env, emit

PROCS = int(os.environ.get("BENCH_LEDGER_PROCS", "4"))
PER_PROC = int(os.environ.get("BENCH_LEDGER_N", "400"))


def _actions(proc: int, run: int) -> tuple[float, float]:
    from corec_tasks.settings import load_settings
    from plugins.capital_pool.config import load_config
    from plugins.capital_pool.ledger import Ledger

    ledger = Ledger(load_settings().database_url, load_config())
    user = f"p{proc}"
    ledger.contribute(user, "5000", f"seed-{run}-{proc}")
    t0 = time.time()
    for i in range(PER_PROC):
        if i % 5 == 4:
            out = ledger.withdraw(user, "50.00", f"w-{run}-{proc}-{i}")
        else:
            out = ledger.contribute(user, "100.00", f"c-{run}-{proc}-{i}")
        assert out["ok"], out
    span = (t0, time.time())
    ledger.close()
    return span


def _bare(proc: int, run: int) -> tuple[float, float]:
    import psycopg

    from corec_tasks.db import libpq_url
    from corec_tasks.settings import load_settings

    with psycopg.connect(libpq_url(load_settings().database_url), autocommit=True) as conn:
        t0 = time.time()
        for i in range(PER_PROC):
            with conn.transaction():
                conn.execute("SELECT 1 FROM pool_state WHERE id = 1 FOR UPDATE")
                conn.execute("INSERT INTO bench_floor VALUES (%s)", (f"{run}-{proc}-{i}",))
        return (t0, time.time())


def _rate(fn: object, run: int) -> float:
    """Actions per second of PROCS processes running ``fn`` at once: all actions over the
    wall time from the first process's first action to the last one's last."""
    with mp.get_context("spawn").Pool(PROCS) as workers:
        spans = workers.starmap(fn, [(p, run) for p in range(PROCS)])  # type: ignore[arg-type]
    return PROCS * PER_PROC / (max(e for _, e in spans) - min(s for s, _ in spans))


def main() -> None:
    with bench_env() as env:
        import psycopg

        from corec_tasks.db import libpq_url
        from corec_tasks.settings import load_settings
        from corec_tasks.storage.migrate import upgrade
        from plugins.capital_pool.config import load_config
        from plugins.capital_pool.ledger import Ledger

        upgrade(env.database_url)
        with psycopg.connect(libpq_url(env.database_url), autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_floor (k text PRIMARY KEY)")
        ledger = Ledger(load_settings().database_url, load_config())
        values, baseline = [], []
        for run in range(RUNS):
            values.append(_rate(_actions, run))
            problems = ledger.verify()
            if problems:
                raise SystemExit(f"invariants broken after run {run}: {problems}")
            baseline.append(_rate(_bare, run))
            print(f"  run {run}: {values[-1]:.0f} actions/s, floor {baseline[-1]:.0f}/s, "
                  "invariants hold", file=sys.stderr)  # fmt: skip
        t0 = time.perf_counter()
        for i in range(300):
            ledger.contribute("solo", "100", f"solo-{i}")
        print(f"  one process, sequential: {300 / (time.perf_counter() - t0):.0f} actions/s",
              file=sys.stderr)  # fmt: skip
        ledger.close()
        emit("ledger_actions_per_s", values, "actions/s", baseline)


if __name__ == "__main__":
    main()
