"""The ``audit_log`` row of a capital action: who (the principal), what, and how it ended.

Every contribution and withdrawal, by every path (API, Celery task, ``celery call``,
``corec capital``, ``Ledger.apply_batch``), writes exactly one row, in the ledger's own
transaction (same connection, before its commit), so an action and its audit row are
committed together or not at all. A refusal before the ledger (no grant, bad
arguments) writes its row in a small transaction of its own.

A *principal* names who authorised the action: ``user:<username>`` (the API's logged-in
user, by a grant), ``operator:<name>`` (``corec capital`` or ``corec capital grant``:
the OS user at the host, or ``--as NAME``), or ``celery:unverified`` (a task whose
grant did not verify). ``audit_log.user_id`` is the user's ``users.id`` for a
``user:`` principal (looked up by username in the same statement), else NULL.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from decimal import Decimal
from typing import Any

from corec_tasks.strict import shown

USER = "user:"
OPERATOR = "operator:"
#: The principal of a refusal whose caller could not be verified (no or a bad grant).
UNVERIFIED = "celery:unverified"
PRINCIPAL = re.compile(r"[a-z]+:[A-Za-z0-9_.@:+-]{1,200}")
#: Operator names given with ``--as``.
OPERATOR_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,100}")

# Parameters: %(a_user)s (a username or NULL), %(a_action)s, %(a_details)s.
VALUES = ("((SELECT id FROM users WHERE username = %(a_user)s), %(a_action)s, now(), "
          "%(a_details)s)")  # fmt: skip
INSERT = f"INSERT INTO audit_log (user_id, action, timestamp, details) VALUES {VALUES}"


def operator(name: str | None = None) -> str:
    """``operator:<name>``, by default ``operator:<OS user>@<host>`` (this process's)."""
    if name is None:
        name = f"{getpass.getuser()}@{socket.gethostname()}"
        name = re.sub(r"[^A-Za-z0-9_.@-]", "_", name)[:100]
    elif not OPERATOR_NAME.fullmatch(name):
        raise ValueError(f"an operator name is 1-100 letters, digits and _.@- (got {shown(name)})")
    return OPERATOR + name


def check_principal(principal: object) -> str:
    """``principal`` if it is one (``kind:name``); ValueError otherwise: it is set by
    code, never by a member, so a wrong one is a bug to stop at once."""
    if not isinstance(principal, str) or not PRINCIPAL.fullmatch(principal):
        raise ValueError(f"a principal is 'user:<name>' or 'operator:<name>', "
                         f"not {shown(principal)}")
    return principal


def params(
    principal: str,
    kind: str,
    member: object,
    amount: object,
    key: object,
    result: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The audit insert's parameters: ``a_user``, ``a_action``, ``a_details``.

    ``details`` is JSON: principal, member, amount (a string), idempotency key, result
    (``ok``, ``refused`` or ``replayed``), the reason of a refusal, and ``extra``.
    """
    outcome = "replayed" if result.get("replayed") else "ok" if result.get("ok") else "refused"
    details: dict[str, Any] = {
        "principal": principal,
        "member": member if isinstance(member, str) and len(member) <= 128 else shown(member),
        "amount": _amount(amount),
        "idempotency_key": key if isinstance(key, str) and len(key) <= 200 else shown(key),
        "result": outcome,
    }
    if outcome == "refused":
        details["reason"] = str(result.get("error", ""))[:500]
    details.update(extra)
    return {
        "a_user": principal.removeprefix(USER) if principal.startswith(USER) else None,
        "a_action": f"capital.{kind}" if kind in ("contribute", "withdraw") else "capital.invalid",
        "a_details": json.dumps(details, sort_keys=True),
    }


def _amount(amount: object) -> str:
    if isinstance(amount, Decimal):
        return f"{amount:f}"
    if isinstance(amount, str) and len(amount) <= 40:
        return amount
    return shown(amount)
