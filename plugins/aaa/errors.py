"""What the AAA plugin refuses, one class per reason (all under ``CorecError``)."""

from __future__ import annotations

from corec_tasks.errors import CorecError


class AAAError(CorecError):
    """Root of the AAA plugin's errors."""


class AuthenticationError(AAAError):
    """A login was refused (wrong username or password)."""


class AccountLockedError(AuthenticationError):
    """Too many failed logins: refused even with the right password until unlocked."""


class AccountDisabledError(AuthenticationError):
    """The account was disabled by an admin."""


class TokenError(AAAError):
    """A token was refused."""


class TokenExpiredError(TokenError):
    """The token's lifetime (``session_timeout``) is over."""


class TokenInvalidError(TokenError):
    """Not a token we signed: malformed, tampered, another secret or algorithm."""


class TokenRevokedError(TokenError):
    """A well-signed token whose session was ended (logout, disabled account)."""


class AuthorizationError(AAAError):
    """The token's role may not perform the action."""


class UserError(AAAError):
    """A user-management request is invalid (unknown or duplicate user, weak password)."""
