"""Token checks for the capital tasks (``auth.require_token``), by the AAA plugin."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from plugins.aaa.errors import AAAError
from plugins.aaa.service import AAAPlugin
from plugins.trading.models import User


def check_token(
    aaa: AAAPlugin, action: str, user_id: object, token: str | None
) -> dict[str, Any] | None:
    """None if ``token`` may do ``action`` on member ``user_id`` (an AAA username),
    else the task's error result. Verification and the decision are audited by AAA."""
    if not token:
        return {"ok": False, "error": f"a login token is required for {action} (token=...)"}
    try:
        claims = aaa.verify(token)
        with aaa._sessions() as db:
            target = db.scalar(select(User.id).where(User.username == str(user_id)))
        if target is None:
            return {"ok": False, "error": f"no user {user_id!r}"}
        aaa.authorize(claims, action, user_id=target)
    except AAAError as exc:
        return {"ok": False, "error": str(exc)}
    return None
