"""capital_intake_actions_per_s: contributions applied per second by block
``capital_intake`` (plugins/capital_pool/intake.py), from the signed XADDs on
``capital_data`` to the block's run recorded: publish, the feed's read and signature
check, one ledger transaction and one ``corec_responses`` answer per entry, the
compare-and-set write, the ack and the block result.

One block of ``BENCH_INTAKE_N`` (default 500) entities, run in-process by the engine,
as a worker process runs it. Baseline, same run and count: the same contributions
applied directly (``CapitalPool.contribute``, one transaction each: the core of the
Celery task, without Celery and without the grant), so the ratio is what the block
path costs over the ledger itself.
"""

from __future__ import annotations

import sys
import time

from benchmarks._common import RUNS, bench_env, emit, sized

N = sized("BENCH_INTAKE_N", 500, 50)
OP = "operator:bench"


def main() -> None:
    with bench_env() as env:
        from corec_tasks.blocks.builtin import default_registry
        from corec_tasks.blocks.engine import Engine
        from corec_tasks.blocks.model import specs_from_config
        from corec_tasks.blocks.store import BlockStore
        from corec_tasks.config import PluginBlockConfig
        from corec_tasks.runtime import reset
        from corec_tasks.settings import load_settings
        from corec_tasks.storage.migrate import upgrade
        from corec_tasks.streams.bus import StreamBus
        from plugins.capital_pool.config import load_config
        from plugins.capital_pool.intake import PROCESSOR, CapitalIntake
        from plugins.capital_pool.service import CapitalPool
        from plugins.trading.channels import CAPITAL_DATA

        upgrade(env.database_url)
        settings = reset(load_settings()).settings  # this run's database and key prefix
        pool = CapitalPool(settings, load_config())
        block = PluginBlockConfig(bloque_id="capital_intake", canal=1, entidades=N,
                                  entidades_por_bloque=N, procesador=PROCESSOR,
                                  stream=CAPITAL_DATA, max_errores=0.2)  # fmt: skip
        store = BlockStore(settings)
        store.create(specs_from_config([block.as_block()]))
        registry = default_registry()
        registry.register(PROCESSOR, CapitalIntake(lambda: pool), kind="vector",
                          needs_payload=True)  # fmt: skip
        engine = Engine(settings, store, registry)
        values, baseline = [], []
        with StreamBus(settings) as bus:
            for run in range(RUNS):
                actions = [{"user_id": f"m{i % 50}", "action": "contribute", "amount": "100.00",
                            "idempotency_key": f"intake-{run}-{i}"} for i in range(N)]  # fmt: skip
                t0 = time.perf_counter()
                bus.publish_many(CAPITAL_DATA, actions)
                (summary,) = engine.run_blocks(["capital_intake"], cycle=run + 1, ts=run + 1.0)
                values.append(N / (time.perf_counter() - t0))
                if (summary["inputs"], summary["errors"]) != (N, 0):
                    raise SystemExit(f"run {run}: the block did not apply all: {summary}")
                t0 = time.perf_counter()
                for i in range(N):
                    out = pool.contribute(f"d{i % 50}", "100.00", f"direct-{run}-{i}",
                                          principal=OP)  # fmt: skip
                    assert out["ok"], out
                baseline.append(N / (time.perf_counter() - t0))
                print(f"  run {run}: block {values[-1]:.0f}/s, direct {baseline[-1]:.0f}/s",
                      file=sys.stderr)  # fmt: skip
        if not pool.verify()["ok"]:
            raise SystemExit("ledger invariants broken")
        pool.close()
        emit("capital_intake_actions_per_s", values, "actions/s", baseline)


if __name__ == "__main__":
    main()
