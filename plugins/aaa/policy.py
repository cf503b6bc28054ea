"""Who may do what: a pure function of role, action and whose data it touches.

admin: everything. member: reads of their own data and pool-wide reads; capital
actions only on their own ``user_id``. viewer: reads only. An action not in the
table is refused for every role, so a typo never passes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from plugins.trading.models import Role


class ActionKind(enum.StrEnum):
    READ = "read"
    CAPITAL = "capital"
    ADMIN = "admin"


#: The actions CoreC knows; plugins add theirs with ``AAAPlugin.register_action``.
ACTIONS: Mapping[str, ActionKind] = {
    # reads: of one user's data when a user_id is given, else pool-wide
    "pool.view": ActionKind.READ,
    "capital.view": ActionKind.READ,
    "portfolio.view": ActionKind.READ,
    "order.view": ActionKind.READ,
    "position.view": ActionKind.READ,
    "stats.view": ActionKind.READ,
    # capital: they move one member's money, named by user_id
    "capital.contribute": ActionKind.CAPITAL,
    "capital.withdraw": ActionKind.CAPITAL,
    "portfolio.manage": ActionKind.CAPITAL,
    "order.submit": ActionKind.CAPITAL,
    "order.cancel": ActionKind.CAPITAL,
    # admin
    "users.add": ActionKind.ADMIN,
    "users.list": ActionKind.ADMIN,
    "users.disable": ActionKind.ADMIN,
    "users.enable": ActionKind.ADMIN,
    "users.unlock": ActionKind.ADMIN,
    "users.passwd": ActionKind.ADMIN,
    "audit.view": ActionKind.ADMIN,
    "config.set": ActionKind.ADMIN,
    "pool.allocate": ActionKind.ADMIN,
}


@dataclass(frozen=True)
class Decision:
    """Allowed or not, and why in one sentence."""

    allowed: bool
    reason: str


def decide(
    role: Role,
    actor_id: int,
    action: str,
    target_user_id: int | None = None,
    actions: Mapping[str, ActionKind] = ACTIONS,
) -> Decision:
    """Whether ``role`` (user ``actor_id``) may do ``action`` on ``target_user_id``'s data."""
    kind = actions.get(action)
    if kind is None:
        return Decision(False, f"{action!r} is not a known action")
    if role is Role.ADMIN:
        return Decision(True, "admins may do everything")
    if kind is ActionKind.ADMIN:
        return Decision(False, f"{action!r} needs the admin role")
    if role is Role.VIEWER:
        if kind is ActionKind.READ:
            return Decision(True, "viewers may read")
        return Decision(False, f"viewers are read-only and {action!r} changes data")
    # member
    if kind is ActionKind.READ:
        if target_user_id is None or target_user_id == actor_id:
            return Decision(True, "members may read their own and pool-wide data")
        return Decision(False, f"members may read only their own data, not user {target_user_id}'s")
    if target_user_id is None:
        return Decision(False, f"capital action {action!r} must name the user_id it acts on")
    if target_user_id != actor_id:
        return Decision(
            False, f"members may act only on their own capital, not on user {target_user_id}'s"
        )
    return Decision(True, "members may act on their own capital")
