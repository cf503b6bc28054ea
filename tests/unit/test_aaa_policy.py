"""Role-based authorization as a pure function."""

from __future__ import annotations

import pytest

from plugins.aaa.policy import ACTIONS, ActionKind, decide
from plugins.trading.models import Role

ME, OTHER = 1, 2


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_admin_may_do_every_known_action_on_anyone(action: str) -> None:
    assert decide(Role.ADMIN, ME, action, OTHER).allowed


def test_member_acts_only_on_their_own_capital() -> None:
    assert decide(Role.MEMBER, ME, "capital.withdraw", ME).allowed
    denied = decide(Role.MEMBER, ME, "capital.withdraw", OTHER)
    assert not denied.allowed
    assert "only on their own capital, not on user 2's" in denied.reason
    missing = decide(Role.MEMBER, ME, "capital.contribute", None)
    assert not missing.allowed and "must name the user_id" in missing.reason


def test_member_reads_own_and_pool_wide_data_only() -> None:
    assert decide(Role.MEMBER, ME, "capital.view", ME).allowed
    assert decide(Role.MEMBER, ME, "pool.view", None).allowed
    assert not decide(Role.MEMBER, ME, "capital.view", OTHER).allowed


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER])
@pytest.mark.parametrize("action", [a for a, k in ACTIONS.items() if k is ActionKind.ADMIN])
def test_admin_actions_need_the_admin_role(role: Role, action: str) -> None:
    decision = decide(role, ME, action, ME)
    assert not decision.allowed and "needs the admin role" in decision.reason


def test_viewer_is_read_only() -> None:
    assert decide(Role.VIEWER, ME, "portfolio.view", OTHER).allowed
    for action in (a for a, k in ACTIONS.items() if k is ActionKind.CAPITAL):
        decision = decide(Role.VIEWER, ME, action, ME)
        assert not decision.allowed and "read-only" in decision.reason


@pytest.mark.parametrize("role", list(Role))
def test_unknown_actions_are_refused_for_everyone(role: Role) -> None:
    decision = decide(role, ME, "capital.withdarw", ME)
    assert not decision.allowed and "not a known action" in decision.reason
