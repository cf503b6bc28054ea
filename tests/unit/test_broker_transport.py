"""sentinel:// broker URLs resolve to CoreC's Sentinel transport in any process that
loads the app, and still do after kombu fails over to the next sentinel's URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import corec_tasks.celery
from kombu import Connection
conn = Connection("sentinel://127.0.0.1:1/0;sentinel://127.0.0.1:2/0",
                  transport_options={"master_name": "corec"})
first = type(conn.transport)
conn.switch(conn.alt[1])  # what ensure_connection does when a sentinel is down
print(first.__name__, type(conn.transport).__name__, first.Channel.__name__)
"""


def test_sentinel_urls_use_corec_transport_across_a_failover_switch() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True)  # fmt: skip
    assert out.stdout.split() == ["CorecSentinelTransport", "CorecSentinelTransport",
                                  "CorecSentinelChannel"]  # fmt: skip


def test_redis_urls_use_corec_transport() -> None:
    probe = ("import corec_tasks.celery\nfrom kombu import Connection\n"
             "for url in ('redis://127.0.0.1:1/0', 'rediss://127.0.0.1:1/0'):\n"
             "    t = type(Connection(url).transport)\n"
             "    print(t.__name__, t.Channel.__name__)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True)  # fmt: skip
    assert out.stdout.split() == ["CorecRedisTransport", "CorecRedisChannel"] * 2
