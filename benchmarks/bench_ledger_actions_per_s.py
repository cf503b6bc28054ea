"""Capital ledger throughput: money actions per second directly on the ledger.

``PROCS`` processes apply ``PER_PROC`` actions each (80% contributions, 20%
withdrawals, each with its own idempotency key) against one pool at once, as
producers on several nodes would. Every transaction takes the pool lock, so this is
the serialised rate, invariants checked (``Ledger.verify``) after each run.

- value: ``Ledger.apply_batch``, ``BATCH`` actions per transaction (one lock, one
  read, one commit for the lot; same rules, results and keys as single calls);
- baseline, same run and processes: the same actions one transaction each
  (``Ledger.contribute`` / ``withdraw``), bound by a commit (WAL flush) per action.

The bare floor of one transaction per action (lock the row, insert a row, commit)
is printed beside them, to show what one-transaction-per-action can reach here.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

from benchmarks._common import RUNS, bench_env, emit, sized

PROCS = sized("BENCH_LEDGER_PROCS", 4, 2)
PER_PROC = sized("BENCH_LEDGER_N", 400, 50)
BATCH = sized("BENCH_LEDGER_BATCH", 50, 25)
#: The principal audited for every action (one audit_log row each, as in production).
BENCH = "operator:bench"


def _plan(proc: int, run: str) -> list[tuple[str, object, object, object]]:
    user = f"p{proc}"
    return [("withdraw", user, "50.00", f"w-{run}-{proc}-{i}") if i % 5 == 4
            else ("contribute", user, "100.00", f"c-{run}-{proc}-{i}")
            for i in range(PER_PROC)]  # fmt: skip


def _worker(mode: str, proc: int, run: str) -> tuple[float, float]:
    """Apply this process's actions; return its (start, end) wall-clock times."""
    from corec_tasks.settings import load_settings
    from plugins.capital_pool.config import load_config
    from plugins.capital_pool.ledger import Ledger

    url = load_settings().database_url
    if mode == "floor":
        import psycopg

        from corec_tasks.db import libpq_url

        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            t0 = time.time()
            for i in range(PER_PROC):
                with conn.transaction():
                    conn.execute("SELECT 1 FROM pool_state WHERE id = 1 FOR UPDATE")
                    conn.execute("INSERT INTO bench_floor VALUES (%s)", (f"{run}-{proc}-{i}",))
            return t0, time.time()
    ledger = Ledger(url, load_config())
    ledger.contribute(f"p{proc}", "5000", f"seed-{run}-{proc}", principal=BENCH)
    actions = _plan(proc, run)
    t0 = time.time()
    if mode == "batch":
        for i in range(0, len(actions), BATCH):
            results = ledger.apply_batch(actions[i : i + BATCH], principal=BENCH)
            assert all(r["ok"] for r in results), results
    else:
        for kind, user, amount, key in actions:
            out = getattr(ledger, kind)(user, amount, key, principal=BENCH)
            assert out["ok"], out
    span = (t0, time.time())
    ledger.close()
    return span


def _rate(mode: str, run: str) -> float:
    """All actions over the wall time from the first process's start to the last's end."""
    with mp.get_context("spawn").Pool(PROCS) as workers:
        spans = workers.starmap(_worker, [(mode, p, run) for p in range(PROCS)])
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
        values, baseline, floor = [], [], []
        for run in range(RUNS):
            values.append(_rate("batch", f"b{run}"))
            baseline.append(_rate("single", f"s{run}"))
            floor.append(_rate("floor", f"f{run}"))
            problems = ledger.verify()
            if problems:
                raise SystemExit(f"invariants broken after run {run}: {problems}")
            print(f"  run {run}: batched {values[-1]:.0f}/s, one transaction each "
                  f"{baseline[-1]:.0f}/s, bare commit floor {floor[-1]:.0f}/s; invariants hold",
                  file=sys.stderr)  # fmt: skip
        ledger.close()
        emit("ledger_actions_per_s", values, "actions/s", baseline)


if __name__ == "__main__":
    main()
