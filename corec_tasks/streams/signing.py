"""Signed streams: entries that move money carry an HMAC only key holders can make.

Anyone who can reach Redis can ``XADD``. On a stream a plugin declares signed
(``channels.signed`` in its ``plugin.json``: the capital pool declares
``trading_results``, whose profits move the pool's NAV), every CoreC publisher (whichever
plugins its node enables) adds a
field ``s`` = hex HMAC-SHA256, under the deployment's *stream key*, of

    b"corec-stream-v1\\n" + stream + b"\\n" + i + b"\\n" + t + b"\\n" + d

(the unprefixed stream name and the entry's ``i``, ``t`` and ``d`` fields, see
``corec_tasks.streams.bus``), and a consumer whose handler is ``signed`` dead-letters an
entry without a valid one (reason ``unsigned`` or ``bad signature``) with one ``error``
alert per stream and hour, before its handler sees it. A copied entry carries the same
signature: handlers derive their idempotency key from the payload's own id, or else
from the signature (:func:`entry_signature`), never from the new entry id.

The framework's own ``corec_commands`` and ``corec_responses`` are always signed
(:data:`FRAMEWORK_SIGNED`): a command drives blocks and plugins, an answer is what an
operator or a member is told happened.

The stream key is ``COREC_STREAM_KEY`` (at least 32 bytes), else ``<data_dir>/stream.key``
(made once, 0600). Every node that publishes or consumes a signed stream must share it;
a producer outside CoreC signs with the recipe above.

**Redis values** a reader or a decision trusts (a cached figure, a rate-limit marker)
are *sealed* with the same key and the same HMAC-SHA256, under their own domain so an
entry's signature never passes for a value's or back:

    sig = HMAC(key, b"corec-value-v1\\n" + name + b"\\n" + ms + b"\\n" + data)
    value = sig + b"\\n" + ms + b"\\n" + data

``name`` is the value's unprefixed Redis key and ``ms`` when it was made (epoch ms), so
a value moved to another key fails and an old one copied back is known to be old
(:func:`unseal` takes the longest age it accepts). A marker whose mere existence means
something (a command was answered) gets a name only key holders can compute
(:func:`tag`), so no one else can set it first.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from corec_tasks.discovery import available
from corec_tasks.errors import ConfigurationError
from corec_tasks.keyfile import env_key, key_file
from corec_tasks.manifest import read_manifest
from corec_tasks.runtime import runtime
from corec_tasks.settings import Settings
from corec_tasks.streams.names import COMMANDS, RESPONSES

KEY_ENV = "COREC_STREAM_KEY"
KEY_FILE = "stream.key"
#: The entry field holding the signature.
F_SIG = b"s"
_DOMAIN = b"corec-stream-v1\n"
_VALUE_DOMAIN = b"corec-value-v1\n"
#: The framework's streams signed whatever the plugins declare.
FRAMEWORK_SIGNED = frozenset({COMMANDS, RESPONSES})


def load_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The stream key: ``COREC_STREAM_KEY``, else ``<data_dir>/stream.key``."""
    env = os.environ if environ is None else environ
    key = env_key(KEY_ENV, env, differ_from="COREC_GRANT_KEY")
    if key is not None:
        return key
    return key_file(Path(settings.data_dir) / KEY_FILE, "stream key", KEY_ENV)


def stream_key(settings: Settings) -> bytes:
    """:func:`load_key`, read once per process for this data folder and key variable
    (for callers with no :class:`~corec_tasks.streams.bus.StreamBus` at hand)."""
    env = hashlib.sha256(os.environ.get(KEY_ENV, "").encode()).hexdigest()
    return runtime().service(("corec.stream_key", str(settings.data_dir), env),
                             lambda _: load_key(settings))  # fmt: skip


def sign(key: bytes, stream: str, i: bytes, t: bytes, d: bytes) -> bytes:
    """The hex signature of one entry of ``stream`` (unprefixed)."""
    msg = b"".join((_DOMAIN, stream.encode(), b"\n", i, b"\n", t, b"\n", d))
    return hmac.new(key, msg, hashlib.sha256).hexdigest().encode()


def check(key: bytes, stream: str, fields: Mapping[bytes, bytes]) -> str | None:
    """None if ``fields`` carry a valid signature for ``stream``, else why not."""
    given = fields.get(F_SIG)
    if not given:
        return "unsigned entry on a signed stream"
    d, i, t = (fields.get(f) for f in (b"d", b"i", b"t"))
    if d is None or i is None or t is None:
        return "bad signature (fields d, i and t are required)"
    if not hmac.compare_digest(sign(key, stream, i, t, d), given):
        return "bad signature"
    return None


def tag(key: bytes, name: str, text: str) -> str:
    """A name part only key holders can compute: the first 32 hex digits of the value
    signature of ``text`` under ``name`` (a marker key no one else can set first)."""
    return _value_sig(key, name, b"0", text.encode())[:32].decode()


def seal(key: bytes, name: str, data: bytes, now: float) -> bytes:
    """``data`` sealed for the Redis key ``name`` (unprefixed), made at ``now``."""
    ms = b"%d" % (now * 1000)
    return b"\n".join((_value_sig(key, name, ms, data), ms, data))


def unseal(
    key: bytes, name: str, raw: bytes | str | None, now: float, max_age_s: float
) -> tuple[bytes | None, str]:
    """``(data, "")`` if ``raw`` was sealed for ``name`` with ``key`` at most
    ``max_age_s`` ago, else ``(None, why not)`` (``why`` is "" for a missing value)."""
    if raw is None:
        return None, ""
    if isinstance(raw, str):
        raw = raw.encode()
    parts = raw.split(b"\n", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None, "not sealed"
    sig, ms, data = parts
    if not hmac.compare_digest(_value_sig(key, name, ms, data), sig):
        return None, "bad seal"
    age = now - int(ms) / 1000
    if age > max_age_s:
        return None, f"sealed {age:.0f} s ago, older than {max_age_s:g} s"
    return data, ""


def _value_sig(key: bytes, name: str, ms: bytes, data: bytes) -> bytes:
    msg = b"".join((_VALUE_DOMAIN, name.encode(), b"\n", ms, b"\n", data))
    return hmac.new(key, msg, hashlib.sha256).hexdigest().encode()


def entry_signature(fields: Mapping[bytes, bytes]) -> str | None:
    """The entry's signature, as text (an idempotency key a copied entry keeps)."""
    raw = fields.get(F_SIG)
    return raw.decode("ascii", "replace")[:64] if raw else None


def signed_streams(settings: Settings) -> frozenset[str]:
    """The streams the plugins declare signed (``channels.signed``) and the framework's
    own (:data:`FRAMEWORK_SIGNED`), read once per config file and plugin path. Every
    plugin found counts, enabled or not: a node that runs only the producer still signs
    for a consumer enabled on another node."""
    return runtime().per_config(settings, "corec.signed_streams", _signed_streams)


def _signed_streams(settings: Settings) -> frozenset[str]:
    names: set[str] = set(FRAMEWORK_SIGNED)
    for folder in available(settings).values():
        try:
            names.update(read_manifest(folder).channels.signed)
        except ConfigurationError:
            continue  # a broken manifest fails where that plugin is enabled
    return frozenset(names)
