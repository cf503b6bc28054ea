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
from typing import Any

import numpy as np

from corec_tasks.blocks.processors import EntryMeta, Payload, ProcessorContext, ProcessorUnavailable
from corec_tasks.commands import answer
from corec_tasks.streams.schemas import PayloadError, validate_payload
from plugins.capital_pool.service import CapitalPool
from plugins.trading.channels import CAPITAL_DATA, CapitalData

log = logging.getLogger(__name__)

PROCESSOR = "capital_intake"
#: What a ``capital_data`` entry may ask of the pool.
STREAM_ACTIONS = ("contribute", "withdraw")
#: Characters a principal's name may not hold (``audit.PRINCIPAL``).
_PRINCIPAL_CHARS = re.compile(r"[^A-Za-z0-9_.@:+-]")


class CapitalIntake:
    """Processor ``capital_intake`` over this process's pool (``pool`` made on first use)."""

    def __init__(self, pool: Callable[[], CapitalPool]) -> None:
        self._pool = pool

    def __call__(self, ctx: ProcessorContext) -> tuple[np.ndarray, np.ndarray]:
        k = len(ctx)
        values = np.ones(k, np.float32)
        errors = np.zeros(k, np.bool_)
        pool = self._pool()
        entries = ctx.entries or ()
        for j in range(k):
            payload = ctx.payload_for(j)
            meta = entries[j] if j < len(entries) else None
            if payload is None or meta is None:
                errors[j] = True
                continue
            errors[j] = not apply_entry(pool, payload, meta)
        return values, errors


def apply_entry(pool: CapitalPool, payload: Payload, meta: EntryMeta) -> bool:
    """Apply one ``capital_data`` payload; False if it is an error of its entity."""
    try:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        data = validate_payload(CAPITAL_DATA, raw, CapitalData)
    except PayloadError as exc:
        log.info("capital_intake: %s %s fails the schema: %s", CAPITAL_DATA, meta.id, exc.reason)
        return False
    action = data.get("action")
    if action is None:
        return True  # an allocation, for the pipeline
    user, amount = data.get("user_id"), data.get("amount")
    key = data.get("idempotency_key") or f"stream:{meta.signature or meta.id}"
    out: dict[str, Any] = {"id": f"capital:{user}:{key}"[:200], "target": "capital_pool",
                           "command": str(action)[:64]}  # fmt: skip
    if action not in STREAM_ACTIONS:
        out["error"] = f"capital_data action must be contribute or withdraw, not {action!r}"
    elif user is None or amount is None:
        out["error"] = f"a capital_data {action} needs user_id and amount"
    else:
        producer = _PRINCIPAL_CHARS.sub("_", meta.instance_id)[:150] or "unknown"
        act = pool.contribute if action == "contribute" else pool.withdraw
        result = act(user, amount, key, principal=f"stream:{producer}")
        if result.get("retry"):
            raise ProcessorUnavailable(f"capital_intake: {result.get('error')}")
        if result.get("ok"):
            out["response"] = result
        else:
            log.info("capital_intake: %s of %s by entry %s refused: %s", action, user, meta.id,
                     result.get("error"))  # fmt: skip
            out["error"] = str(result.get("error"))[:1000]
    if user is not None:  # an answer needs an id; without a user there is none to wait on
        answer(pool.settings, pool.redis, out)
    return "error" not in out
