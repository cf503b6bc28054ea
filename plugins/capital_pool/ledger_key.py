"""The ledger key: what MACs every ledger entry (``chain.entry_mac``) and the seal of the
entries written before MACs existed (``chain.seal_mac``).

Why a key at all: the hash chain has no key, so whoever holds the application database
role could compute the next hash from the documented format and INSERT an entry that
``verify`` accepted. The ledger key lives on the nodes, never in the database: a row
written without it fails ``verify``, naming its seq and kind.

The key is ``COREC_LEDGER_KEY`` (at least 32 bytes; it must differ from the grant,
stream and login keys, so leaking one of those never forges the ledger), else
``<data_dir>/ledger.key``, made once, mode 0600 (``corec_tasks.keyfile``), as the grant
key is. Every node that writes or verifies the ledger needs the same key: set
``COREC_LEDGER_KEY`` on multi-node deployments. A node with another key refuses to
write (``LedgerKeyError``, at its first action) and ``verify`` says the key is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from corec_tasks.errors import ConfigurationError, CorecError
from corec_tasks.keyfile import env_key, key_file
from corec_tasks.settings import Settings

KEY_ENV = "COREC_LEDGER_KEY"
KEY_FILE = "ledger.key"
#: Keys the ledger key must not equal: a leak of one must not forge the ledger.
OTHER_KEYS = ("COREC_GRANT_KEY", "COREC_STREAM_KEY", "COREC_JWT_SECRET", "COREC_TASK_KEY")


class LedgerKeyError(CorecError):
    """This node's ledger key is not the one the ledger was written with."""


def load_key(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> bytes:
    """The ledger key: ``COREC_LEDGER_KEY``, else ``<data_dir>/ledger.key``."""
    env = os.environ if environ is None else environ
    key = env_key(KEY_ENV, env)
    if key is not None:
        for other in OTHER_KEYS:
            if key == env.get(other, "").encode():
                raise ConfigurationError([(KEY_ENV, f"must differ from {other}")], "environment")
        return key
    if settings is None:
        from corec_tasks.runtime import get_settings

        settings = get_settings()
    return key_file(Path(settings.data_dir) / KEY_FILE, "ledger key", KEY_ENV)


def where(environ: Mapping[str, str] | None = None) -> str:
    """Where this node's ledger key comes from, for messages."""
    env = os.environ if environ is None else environ
    return KEY_ENV if env.get(KEY_ENV) else f"<data_dir>/{KEY_FILE} ({KEY_ENV} is unset)"
