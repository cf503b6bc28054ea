"""Run every benchmark, each in a process of its own (or some: ``--only NAME[,NAME]``).

Each benchmark prints its JSON figure lines on stdout; progress goes to stderr. A
benchmark runs in a fresh interpreter so nothing one leaves behind (a Celery app bound
to a key prefix, a runtime, a forked worker) reaches the next. The exit status is 0
when every benchmark exited 0, else 1 after all have run, naming the ones that failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def names() -> list[str]:
    """Every benchmark's name: ``bench_<name>.py`` beside this file."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def run(name: str, timeout: float) -> int:
    """One benchmark in its own session; on timeout its whole process group is killed,
    the workers it started with it."""
    proc = subprocess.Popen([sys.executable, "-m", f"benchmarks.bench_{name}"],
                            cwd=HERE.parent, start_new_session=True)  # fmt: skip
    try:
        return proc.wait(timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(f"  {name}: killed after {timeout:.0f}s", file=sys.stderr)
        return -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated names, e.g. cycle_wall_s")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds one benchmark may take before it is killed")
    args = parser.parse_args()
    chosen = names()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in chosen]
        if unknown:
            print(f"no benchmark named {', '.join(map(repr, unknown))}; "
                  f"there are: {', '.join(chosen)}", file=sys.stderr)  # fmt: skip
            return 2
        chosen = wanted
    failed: list[str] = []
    for i, name in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {name}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        rc = run(name, args.timeout)
        took = time.monotonic() - t0
        print(f"  {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {took:.0f}s",
              file=sys.stderr, flush=True)  # fmt: skip
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"{len(failed)} of {len(chosen)} benchmarks failed: {', '.join(failed)}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"all {len(chosen)} benchmarks ran", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
