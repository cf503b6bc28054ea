"""Deployment keys: from the environment, or a random key made once under the data dir.

Used by the capital grants (``COREC_GRANT_KEY``, ``grant.key``) and the signatures of
money streams (``COREC_STREAM_KEY``, ``stream.key``). A key file is created once, mode
0600, atomically (two processes starting together agree on one key); every node of a
deployment must share each key, so multi-node deployments set the variables.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from corec_tasks.errors import ConfigurationError
from corec_tasks.folders import ensure_dir

#: The shortest key accepted, in bytes.
MIN_KEY_BYTES = 32


def env_key(name: str, environ: Mapping[str, str], *, differ_from: str = "") -> bytes | None:
    """The key in environment variable ``name`` (None if unset); a ConfigurationError
    naming it if it is too short or equal to ``differ_from``'s value."""
    value = environ.get(name, "")
    if not value:
        return None
    key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(
            [(name, f"is {len(key)} bytes, {MIN_KEY_BYTES} are needed; e.g. "
                    f"export {name}=$(openssl rand -hex 32)")], "environment",
        )  # fmt: skip
    if differ_from and key == environ.get(differ_from, "").encode():
        raise ConfigurationError([(name, f"must differ from {differ_from}")], "environment")
    return key


def key_file(path: Path, label: str = "key") -> bytes:
    """The key in ``path``, created with 64 random hex digits, mode 0600, if missing.

    Written to a private temporary file then hard-linked into place: the link fails if
    another process got there first, and then its key is the one read back.
    """
    if not path.exists():
        ensure_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)  # mode 0600
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
            os.close(fd)
            with suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigurationError([(str(path), f"has mode {mode:o}; chmod 600 it")], label)
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError([(str(path), f"holds {len(key)} bytes, {MIN_KEY_BYTES} needed")],
                                 label)  # fmt: skip
    return key
