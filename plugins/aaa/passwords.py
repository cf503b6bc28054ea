"""Password hashing with argon2id (argon2-cffi), at the configured cost."""

from __future__ import annotations

from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from plugins.aaa.config import AAAConfig


class Passwords:
    """Hash and check passwords; a hash made at an older cost is flagged for rehash."""

    def __init__(self, config: AAAConfig) -> None:
        self._ph = PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_cost,
            parallelism=config.argon2_parallelism,
        )

    def hash(self, password: str) -> str:
        """A salted argon2id hash in PHC string form (parameters included)."""
        return self._ph.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """True when ``password`` matches; a corrupt hash is a mismatch, never an exception."""
        try:
            return self._ph.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other parameters than the configured ones."""
        try:
            return self._ph.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    @cached_property
    def _dummy(self) -> str:
        return self._ph.hash("not a password: equalises the time of an unknown-user login")

    def burn(self, password: str) -> None:
        """Spend one verification's time: unknown usernames answer as slowly as known ones."""
        self.verify(self._dummy, password)
