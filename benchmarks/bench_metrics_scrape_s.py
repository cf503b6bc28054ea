"""metrics_scrape_s: one HTTP scrape of the exporter (`corec metrics serve`) on the
shipped config (the seed's sample and the plugins' blocks registered, one cycle run, its
plugins enabled: the capital pool and the pipeline's orders read from PostgreSQL).

Value: GET /metrics with the per-scrape cache off, so every scrape reads the cluster.
Baseline, same run: GET /metrics of an empty registry on the same HTTP server code
(the floor any exporter pays). Goal: <= 0.1 s.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._common import RUNS, SMOKE, bench_env, emit, full_cycle, seed_nucleus


def _scrape(port: int) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        body = r.read()
    return time.perf_counter() - started, len(body)


def _per_source(registry: Any) -> None:
    """Median collect time of each source and framework part, to stderr."""
    collector = next(iter(registry._collector_to_names))  # the one CorecCollector
    parts: dict[str, Any] = {}
    for i, (name, source) in enumerate(collector.sources):
        parts[f"{name}.{i}"] = source.collect
        if name == "corec":  # its parts too
            for part in ("_blocks", "_totals", "_cycles", "_unacked", "_streams",
                         "_dead_letters", "_beat"):  # fmt: skip
                fn = getattr(source, part)
                parts[f"corec.{part[1:]}"] = (lambda f=fn: f([]) if f.__name__ in
                                              ("_blocks", "_totals") else f())
    for name, fn in parts.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            list(fn())
            times.append(time.perf_counter() - t)
        print(f"  {name:<20} {statistics.median(times) * 1000:7.1f} ms", file=sys.stderr)


def main() -> None:
    with bench_env():
        settings, nucleus, blocks = seed_nucleus()
        from prometheus_client import CollectorRegistry, start_http_server

        from corec_tasks.metrics.exporter import build_registry
        from corec_tasks.procs import managed, wait_for_workers, worker_cmd

        with tempfile.TemporaryDirectory() as logs, managed(
            worker_cmd("bench", concurrency=2), Path(logs) / "worker.log"
        ):
            wait_for_workers(1)
            full_cycle(nucleus, blocks, None)
        servers = []
        try:
            registry = build_registry(settings, min_interval_s=0.0)
            full = start_http_server(0, addr="127.0.0.1", registry=registry)
            empty = start_http_server(0, addr="127.0.0.1", registry=CollectorRegistry())
            servers = [full, empty]
            port, empty_port = (s[0].server_port for s in servers)
            _scrape(port)  # warm-up: connections, first queries
            values, sizes = [], []
            for _ in range(RUNS if SMOKE else max(RUNS, 10)):
                seconds, size = _scrape(port)
                values.append(seconds)
                sizes.append(size)
            baseline = [_scrape(empty_port)[0] for _ in range(RUNS if SMOKE else max(RUNS, 10))]
            _per_source(registry)
        finally:
            for server, thread in servers:
                server.shutdown()
                thread.join(timeout=5)
        print(f"  {blocks} blocks, scrape body {sizes[-1]} bytes",
              file=sys.stderr)  # fmt: skip
        emit("metrics_scrape_s", values, "s", baseline)


if __name__ == "__main__":
    main()
