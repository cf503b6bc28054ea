"""A client process for the capital concurrency test and benchmark.

``python -m tests.integration.capital_client SEED N REPEAT`` sends N mixed capital
actions as Celery tasks (contributions and withdrawals by a few members; a REPEAT share
of them reuse an earlier key, some of those keys shared with the other clients), each
with its own grant (minted with the node's grant key, as ``operator:client-SEED``), then
prints one JSON line per action: ``[kind, user, amount, key, result]``.
"""

from __future__ import annotations

import json
import random
import sys


def plan(seed: int, n: int, repeat: float) -> list[tuple[str, str, str, str]]:
    rng = random.Random(seed)
    out: list[tuple[str, str, str, str]] = []
    for i in range(n):
        if out and rng.random() < repeat:
            out.append(rng.choice(out))  # a retry of an earlier action, same key
            continue
        if i % 10 == 0:  # a key every client uses: the same action raced across clients
            user = f"m{i % 7}"
            out.append(("contribute", user, "100.00", f"shared-{i}"))
            continue
        user = f"m{rng.randrange(7)}"
        if rng.random() < 0.7:
            out.append(("contribute", user, f"{rng.randrange(100, 2000)}.{rng.randrange(100):02d}",
                        f"c{seed}-{i}"))  # fmt: skip
        else:
            out.append(("withdraw", user, f"{rng.randrange(1, 300)}.00", f"w{seed}-{i}"))
    return out


def main() -> None:
    from corec_tasks.celery import app
    from plugins.capital_pool import grants

    seed, n, repeat = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    actions = plan(seed, n, repeat)
    key = grants.load_key()
    pending = [
        app.send_task(f"capital_pool.{k}", args=[u, a, idem], kwargs={"grant": grants.mint(
            u, f"capital.{k}", a, idem, user_id=None, username=f"operator:client-{seed}",
            key=key)})
        for k, u, a, idem in actions
    ]  # fmt: skip
    for (k, u, a, idem), res in zip(actions, pending, strict=True):
        print(json.dumps([k, u, a, idem, res.get(timeout=120)]))


if __name__ == "__main__":
    main()
