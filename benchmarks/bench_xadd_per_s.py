"""Stream publishing throughput: ``publish_many`` (pipelined XADD) vs one XADD per call.

Both go through the same wire format (``d``/``i``/``t``, ``MAXLEN ~``); the baseline
runs fewer messages, since it is round-trip bound, and is reported per second.
"""

from __future__ import annotations

import os
import time

from benchmarks._common import RUNS, bench_env, emit, sized
from corec_tasks.settings import load_settings
from corec_tasks.streams.bus import StreamBus
from plugins.trading.channels import MARKET_DATA

N = sized("BENCH_XADD_N", 50_000, 2_000)
N_BASELINE = sized("BENCH_XADD_BASELINE_N", 5_000, 500)


def _payloads(n: int) -> list[dict[str, object]]:
    return [
        {"symbol": "BTCUSDT", "price": 35_000.0 + (i % 1000) / 100, "volume": 1.5} for i in range(n)
    ]


def main() -> None:
    """Median msg/s of ``publish_many`` and of single ``publish`` calls."""
    with bench_env() as env:
        values: list[float] = []
        baseline: list[float] = []
        payloads = _payloads(N)
        for run in range(RUNS):
            # A fresh prefix per run: each run starts from an empty stream.
            os.environ["COREC_REDIS_PREFIX"] = f"{env.prefix}xadd{run}:"
            with StreamBus(load_settings()) as bus:
                t0 = time.perf_counter()
                ids = bus.publish_many(MARKET_DATA, payloads)
                values.append(len(ids) / (time.perf_counter() - t0))

                bus.client.delete(bus.key(MARKET_DATA))
                t0 = time.perf_counter()
                for p in payloads[:N_BASELINE]:
                    bus.publish(MARKET_DATA, p)
                baseline.append(N_BASELINE / (time.perf_counter() - t0))
                bus.client.delete(bus.key(MARKET_DATA))
        emit("xadd_per_s", values, "msg/s", baseline)


if __name__ == "__main__":
    main()
