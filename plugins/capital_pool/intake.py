"""The capital pool's channel intake as a block of stream-fed entities (seed 000's
``registrar_celu_entidad(CeluEntidadCoreC("nano_capital_…", get_procesador("capital_data"),
"capital_data", …))``).

Block ``capital_intake`` (``corec_config.json``, the plugin's ``bloque``) is bound to
``capital_data``; the engine hands each run the entries that arrived since the last
one, one per entity, round-robin. Processor ``capital_intake`` applies each:

- ``{"action": "contribute"|"withdraw", "user_id", "amount": "500.00",
  "idempotency_key"?}``: the pool's contribute or withdraw, with the same rules and
  audit as the Celery task. The principal is ``stream:<producer instance id>``:
  only entries signed with the stream key get here (the engine dead-letters the
  others, ``corec_tasks/blocks/feed.py``), so holding the key is an operator's authority.
  The idempotency key is the entry's ``idempotency_key``, else ``stream:<signature>``,
  so a copied or redelivered entry replays the first result.
- the pool's own allocations (``kind``) are the pipeline's: passed over, not errors.
- anything else (the schema refuses it, an unknown action, no user or amount) and a
  refusal by the pool's rules are **errors of that entity**: they count in the block's
  error rate, so a producer sending bad actions shows in the block's fitness, its
  audit and its alerts. Schema failures are dead-lettered once, by the persister.

Each contribution or withdrawal is answered on ``corec_responses`` once, with the id
``capital:<user_id>:<idempotency key>`` (keys are scoped by member) and the pool's
result as ``response``, or its refusal as ``error``.

If the ledger's database is down, the run raises ``ProcessorUnavailable``: the block's
run is not recorded, its entries stay pending and the task is retried, so nothing is
acked unapplied.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from corec_tasks.blocks.processors import EntryMeta, Payload, ProcessorContext, ProcessorUnavailable
from corec_tasks.commands import answer_many
from corec_tasks.streams.schemas import PayloadError, validate_payload
from plugins.capital_pool.service import CapitalPool
from plugins.trading.channels import CAPITAL_DATA, CapitalData

log = logging.getLogger(__name__)

PROCESSOR = "capital_intake"
#: What a ``capital_data`` entry may ask of the pool.
STREAM_ACTIONS = ("contribute", "withdraw")
#: Characters a principal's name may not hold (``audit.PRINCIPAL``).
_PRINCIPAL_CHARS = re.compile(r"[^A-Za-z0-9_.@:+-]")


@dataclass(slots=True)
class _Action:
    """One entry's action, checked: its answer is ``out`` (``error`` already set if the
    entry asks for nothing the pool can do)."""

    j: int
    principal: str
    act: tuple[str, object, object, object]
    out: dict[str, Any]


class CapitalIntake:
    """Processor ``capital_intake`` over this process's pool (``pool`` made on first use).

    A run's actions are applied in stream order, one ledger transaction per run of
    consecutive entries from the same producer (``CapitalPool.apply_batch``: the same
    rules, results, keys and audit rows as one call each), and answered in one round
    trip, so a burst costs one pool lock and one commit, not one per member.
    """

    def __init__(self, pool: Callable[[], CapitalPool]) -> None:
        self._pool = pool

    def __call__(self, ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        k = len(ctx)
        values = np.ones(k, np.float32)
        errors = np.zeros(k, np.bool_)
        entries = ctx.entries or ()
        actions: list[_Action] = []
        for j in range(k):
            payload = ctx.payload_for(j)
            meta = entries[j] if j < len(entries) else None
            got = None if payload is None or meta is None else _check(payload, meta, j)
            if got is None:  # the schema refuses it, or no entry behind it
                errors[j] = True
            elif got is not _PASS:
                actions.append(got)
        if not actions:
            return values, errors
        pool = self._pool()
        todo = [a for a in actions if "error" not in a.out]
        start = 0
        while start < len(todo):  # runs of one producer, in stream order
            end = start + 1
            while end < len(todo) and todo[end].principal == todo[start].principal:
                end += 1
            batch = todo[start:end]
            results = pool.apply_batch([a.act for a in batch], principal=batch[0].principal)
            for a, result in zip(batch, results, strict=True):
                if result.get("retry"):
                    raise ProcessorUnavailable(f"capital_intake: {result.get('error')}")
                if result.get("ok"):
                    a.out["response"] = result
                else:
                    log.info("capital_intake: %s refused: %s", a.out["id"], result.get("error"))
                    a.out["error"] = str(result.get("error"))[:1000]
            start = end
        answer_many(pool.settings, pool.redis, [a.out for a in actions if a.out["id"]])
        for a in actions:
            errors[a.j] = "error" in a.out
        return values, errors


#: An entry that is not the pool's to act on (an allocation, for the pipeline).
_PASS = _Action(-1, "", ("", None, None, None), {})


def _check(payload: Payload, meta: EntryMeta, j: int) -> _Action | None:
    """Entry ``j``'s action; ``_PASS`` if it is none of the pool's, None if the schema
    refuses it (the persister dead-letters it)."""
    try:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        data = validate_payload(CAPITAL_DATA, raw, CapitalData)
    except PayloadError as exc:
        log.info("capital_intake: %s %s fails the schema: %s", CAPITAL_DATA, meta.id, exc.reason)
        return None
    action = data.get("action")
    if action is None:
        return _PASS
    user, amount = data.get("user_id"), data.get("amount")
    key = data.get("idempotency_key") or f"stream:{meta.signature or meta.id}"
    producer = _PRINCIPAL_CHARS.sub("_", meta.instance_id)[:150] or "unknown"
    out: dict[str, Any] = {"id": f"capital:{user}:{key}"[:200], "target": "capital_pool",
                           "command": str(action)[:64]}  # fmt: skip
    if action not in STREAM_ACTIONS:
        out["error"] = f"capital_data action must be contribute or withdraw, not {action!r}"
    elif user is None or amount is None:
        out["error"] = f"a capital_data {action} needs user_id and amount"
    if "error" in out and user is None:
        out["id"] = ""  # no member: no id anyone waits on; an error of its entity only
    return _Action(j, f"stream:{producer}", (str(action), user, amount, key), out)
