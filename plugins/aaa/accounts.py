"""Account management of the AAA plugin: add, enable/disable, unlock, change passwords,
list. Mixed into ``AAAPlugin``; every change is audited in its own transaction."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from plugins.aaa import writes
from plugins.aaa.config import AAAConfig
from plugins.aaa.errors import AAAError, AuthenticationError, UserError
from plugins.aaa.limits import HashSlots
from plugins.aaa.passwords import Passwords
from plugins.aaa.tokens import Claims
from plugins.trading.models import AuditLog, Role, User, UserSession

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@dataclass(frozen=True)
class UserInfo:
    """A user as the CLI and callers see it (never the password hash)."""

    id: int
    username: str
    email: str | None
    role: Role
    is_active: bool
    locked_until: datetime | None
    failed_logins: int
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "role": self.role.value,
            "is_active": self.is_active,
            "locked_until": self.locked_until.isoformat() if self.locked_until else None,
            "failed_logins": self.failed_logins,
            "created_at": self.created_at.isoformat(),
        }


class Accounts:
    """The account half of ``AAAPlugin`` (which provides what is declared here)."""

    config: AAAConfig
    _sessions: sessionmaker[Session]
    _passwords: Passwords
    _slots: HashSlots
    _clock: Callable[[], datetime]

    if TYPE_CHECKING:

        def authorize(
            self, token_or_claims: str | Claims, action: str, *, user_id: int | None = None
        ) -> bool: ...
        def _audit(
            self,
            db: Session,
            user_id: int | None,
            action: str,
            _details: Any = None,
            **fields: Any,
        ) -> AuditLog: ...
        def _locked_until(self, user: User) -> datetime | None: ...

    def add_user(
        self,
        username: str,
        password: str,
        role: Role | str,
        *,
        email: str | None = None,
        actor: Claims | None = None,
        via: str = "api",
    ) -> UserInfo:
        """Create an account. With ``actor`` the caller must be allowed ``users.add``;
        without one it is a trusted local call (the CLI), audited with ``via``."""
        if actor is not None:
            self.authorize(actor, "users.add")
        if not _USERNAME.match(username):
            raise UserError(
                f"username {username!r} must be 1-64 letters, digits or . _ @ - characters"
            )
        try:
            role = Role(role)
        except ValueError:
            raise UserError(f"role {role!r} must be one of admin, member, viewer") from None
        if len(password) < self.config.min_password_length:
            raise UserError(
                f"password must have at least {self.config.min_password_length} characters"
            )
        password_hash = self._passwords.hash(password)
        try:
            with self._sessions.begin() as db:
                user = writes.add_user(db, username, email, password_hash, role, self._clock())
                self._audit(
                    db,
                    actor.user_id if actor else None,
                    "user.add",
                    username=username,
                    role=role.value,
                    new_user_id=user.id,
                    via=via,
                )
        except IntegrityError:
            raise UserError(f"user {username!r} (or email {email!r}) already exists") from None
        return self._info(user)

    def set_active(
        self, username: str, active: bool, *, actor: Claims | None = None, via: str = "api"
    ) -> UserInfo:
        """Enable or disable an account; disabling also ends its sessions."""
        action = "users.enable" if active else "users.disable"
        if actor is not None:
            self.authorize(actor, action)
        now = self._clock()
        with self._sessions.begin() as db:
            user = self._user(db, username)
            user.is_active = active
            revoked = 0
            if not active:
                result = db.execute(
                    update(UserSession)
                    .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                revoked = result.rowcount  # type: ignore[attr-defined]
            self._audit(
                db,
                actor.user_id if actor else None,
                action.replace("users.", "user."),
                username=username,
                target_user_id=user.id,
                sessions_revoked=revoked,
                via=via,
            )
            return self._info(user)

    def unlock(self, username: str, *, actor: Claims | None = None, via: str = "api") -> UserInfo:
        """Lift a lockout and reset the failed-login count."""
        if actor is not None:
            self.authorize(actor, "users.unlock")
        with self._sessions.begin() as db:
            user = self._user(db, username)
            user.failed_logins, user.locked_at = 0, None
            self._audit(
                db,
                actor.user_id if actor else None,
                "account.unlocked",
                username=username,
                target_user_id=user.id,
                reason="admin",
                via=via,
            )
            return self._info(user)

    def change_password(
        self,
        username: str,
        new_password: str,
        *,
        old_password: str | None = None,
        keep_session: str | None = None,
        actor: Claims | None = None,
        via: str = "api",
    ) -> int:
        """Set ``username``'s password and revoke their sessions but ``keep_session``;
        the number revoked. With ``old_password`` it must match (a user changing their
        own); an ``actor`` changing someone else's needs ``users.passwd``; neither is a
        trusted local call (the CLI)."""
        if actor is not None and actor.username != username:
            self.authorize(actor, "users.passwd")
        if len(new_password) < self.config.min_password_length:
            raise UserError(
                f"password must have at least {self.config.min_password_length} characters"
            )
        refusal: AAAError | None = None
        revoked = 0
        with self._slots.slot():
            new_hash = self._passwords.hash(new_password)
            with self._sessions.begin() as db:
                user = self._user(db, username)
                who = actor.user_id if actor else None
                if old_password is not None and not self._passwords.verify(
                    user.password_hash, old_password
                ):
                    self._audit(db, who, "password.refused", username=username,
                                reason="wrong current password", via=via)  # fmt: skip
                    refusal = AuthenticationError("the current password is wrong")
                else:
                    writes.set_password_hash(db, user, new_hash)
                    query = update(UserSession).where(
                        UserSession.user_id == user.id, UserSession.revoked_at.is_(None)
                    )
                    if keep_session is not None:
                        query = query.where(UserSession.token != keep_session)
                    revoked = db.execute(query.values(revoked_at=self._clock())).rowcount  # type: ignore[attr-defined]
                    self._audit(db, who, "password.changed", username=username,
                                target_user_id=user.id, sessions_revoked=revoked,
                                via=via)  # fmt: skip
        if refusal is not None:
            raise refusal
        return int(revoked)

    def list_users(self) -> list[UserInfo]:
        """Every account, by id."""
        with self._sessions() as db:
            return [self._info(u) for u in db.scalars(select(User).order_by(User.id))]

    def _user(self, db: Session, username: str) -> User:
        user = db.scalar(select(User).where(User.username == username).with_for_update())
        if user is None:
            raise UserError(f"no user named {username!r}")
        return user

    def _info(self, user: User) -> UserInfo:
        until = self._locked_until(user)
        if until is not None and self._clock() >= until:
            until = None
        return UserInfo(
            id=user.id,
            username=user.username,
            email=user.email,
            role=Role(user.role),
            is_active=user.is_active,
            locked_until=until,
            failed_logins=user.failed_logins,
            created_at=user.created_at,
        )
