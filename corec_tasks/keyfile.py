"""Deployment keys: from the environment, or a key file in the data folder.

Used by task messages (``COREC_TASK_KEY``, ``task.key``), the signatures of money
streams (``COREC_STREAM_KEY``, ``stream.key``) and the plugins' keys their manifests
declare (the capital grants' ``COREC_GRANT_KEY``, ``grant.key``, ...). A process only
reads a key: ``corec keys init`` (and ``corec services up``, the one-machine path)
makes the missing files once, mode 0600, atomically (two processes starting together
agree on one key). A process that finds neither the variable nor the file refuses to
run, naming both: every node of a deployment must share each key, and a node that made
its own would sign what no other node accepts (issue 21: each node silently made its
own keys and the capital calls other nodes' workers took were refused).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
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


def key_file(path: Path, label: str = "key", env: str = "") -> bytes:
    """The key in ``path``; a ConfigurationError naming ``env`` and ``path`` if the
    file is missing, readable by others, or too short."""
    if not path.exists():
        where = f"{env} is not set and " if env else ""
        raise ConfigurationError(
            [(env or str(path), f"{where}{path} does not exist: run `corec keys init` on the "
                                "first node, then give every other node the same keys "
                                "(`corec keys show-paths` says which)")], label,
        )  # fmt: skip
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigurationError([(str(path), f"has mode {mode:o}; chmod 600 it")], label)
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError([(str(path), f"holds {len(key)} bytes, {MIN_KEY_BYTES} needed")],
                                 label)  # fmt: skip
    return key


def create_key_file(path: Path) -> bool:
    """Make ``path`` with 64 random hex digits, mode 0600, if missing; True if made.

    Written to a private temporary file then hard-linked into place: the link fails if
    another process got there first, and then its key stands.
    """
    if path.exists():
        return False
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)  # mode 0600
    try:
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: theirs stands
            return False
    finally:
        os.unlink(tmp)
    return True
