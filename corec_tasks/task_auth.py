"""Every Celery task message is authenticated with the deployment's task key.

Whoever holds the Redis password can push a task message with redis-py alone; a worker
must run only what a CoreC process sent. Each message carries two headers:
``corec_ts`` (when it was signed, Unix seconds) and ``corec_sig``, the hex
HMAC-SHA256 under the task key (``COREC_TASK_KEY``, else ``<data_dir>/task.key``) of

    b"corec-task-v1\\n" + canonical JSON of the covered headers + b"\\n" + body bytes

where the covered headers are the task's name and id and every header the worker
acts on (:data:`COVERED`: eta, expires, retries, group, parent and root ids, time
limits, ``shadow``, ``ignore_result``) plus ``corec_ts``, and the body is the
serialized ``(args, kwargs, embed)`` exactly as it travels (so the callbacks of a
chord or chain are covered too). A worker checks it before the message reaches the
pool (:func:`strategy`); a message that is unsigned, altered, renamed, older than
``COREC_TASK_MAX_AGE_S``, signed in the future, not protocol 2 JSON, or a replay of
one that already ran, is acknowledged and dropped, never run: logged with its reason,
counted (``corec:tasks:refused``) and alerted (source ``task.auth``, once an hour per
reason).

"Ran" is recorded when a task finishes (``corec:task:done:<id>``, kept for the
maximum age): a message redelivered because its worker died before finishing still
runs (at-least-once delivery), a copy of one that finished does not. Retries reuse the
task id and are signed anew, so a retry is not a replay.

Why not Celery's own message signing (``task_serializer = "auth"``): it signs only the
serialized body, with X.509 certificates; in message protocol 2 the name and id travel
in headers it does not cover, so a captured message could run under another task's
name or twice. The same primitive as the signed streams (HMAC-SHA256, a shared key)
covers the whole message for a few microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
from celery import Task
from celery.app.amqp import AMQP
from celery.worker.strategy import default as default_strategy
from kombu.serialization import dumps

from corec_tasks.keyfile import env_key, key_file
from corec_tasks.settings import Settings

log = logging.getLogger(__name__)

KEY_ENV = "COREC_TASK_KEY"
KEY_FILE = "task.key"
H_SIG, H_TS = "corec_sig", "corec_ts"
#: The headers a worker acts on: renaming, re-timing or regrouping a message breaks it.
COVERED = ("task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
           "timelimit", "root_id", "parent_id", "ignore_result")  # fmt: skip
#: Signed more than this far in the future (clock skew between nodes): refused.
FUTURE_SKEW_S = 300
REFUSED = "corec:tasks:refused"
_DOMAIN = b"corec-task-v1\n"
_CONTENT = ("application/json", "utf-8")


def load_key(data_dir: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The task key: ``COREC_TASK_KEY``, else ``<data_dir>/task.key``."""
    env = os.environ if environ is None else environ
    key = env_key(KEY_ENV, env, differ_from="COREC_STREAM_KEY")
    if key is not None:
        return key
    return key_file(Path(data_dir) / KEY_FILE, "task key", KEY_ENV)


def publisher_key() -> bytes:
    """The key this process signs with, for the environment as it is now.

    Read from the environment at each send rather than from the process's settings:
    a client app may run on other settings than the process's runtime (tests switch
    ``COREC_DATA_DIR`` per test). Cached in the runtime per (variable, folder).
    """
    from corec_tasks.runtime import runtime

    env, folder = os.environ.get(KEY_ENV, ""), os.environ.get("COREC_DATA_DIR", ".corec")
    return runtime().service(("task_auth.key", env, folder), lambda _: load_key(Path(folder)))


def done_key(settings: Settings, task_id: str) -> str:
    """The Redis key that records task ``task_id`` as finished."""
    return settings.key(f"corec:task:done:{task_id}")


def digest(key: bytes, headers: Mapping[str, Any], body: bytes) -> str:
    """The hex signature of a message with ``headers`` and serialized ``body``."""
    covered = {name: headers.get(name) for name in (*COVERED, H_TS)}
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), default=str)
    msg = b"".join((_DOMAIN, text.encode(), b"\n", body))
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign(key: bytes, body: Any, headers: dict[str, Any], now: float) -> None:
    """Add ``corec_ts`` and ``corec_sig`` to ``headers`` of a message about to carry
    ``body``: serialized here as the producer will (JSON, kombu's encoder)."""
    _type, encoding, payload = dumps(body, serializer="json")  # type: ignore[no-untyped-call]
    raw = payload.encode(encoding) if isinstance(payload, str) else payload
    headers[H_TS] = int(now)
    headers[H_SIG] = digest(key, headers, raw)


def problem(key: bytes, message: Any, payload: Any, now: float, max_age_s: int) -> str | None:
    """None if ``message`` (a kombu message the worker received) is a genuine CoreC
    task message, else why not (the refusal's reason)."""
    headers = message.headers
    if payload is not None or not isinstance(headers, dict) or "task" not in headers:
        return "not a protocol 2 task message"
    if (message.content_type, message.content_encoding) != _CONTENT:
        return f"content {message.content_type!r} is not JSON"
    if headers.get("compression"):
        return "compressed messages are not accepted"
    given, ts = headers.get(H_SIG), headers.get(H_TS)
    if not isinstance(given, str) or type(ts) is not int:
        return "unsigned task message"
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    if not hmac.compare_digest(digest(key, headers, body), given):
        return "bad signature"
    if ts > now + FUTURE_SKEW_S:
        return "signed in the future"
    if ts < now - max_age_s:
        return f"older than {max_age_s}s"
    return None


def strategy(task: Task, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    """Celery's default strategy behind the signature check: what Celery runs for each
    message of ``task`` in the worker's main process, before the pool sees it."""
    from corec_tasks.runtime import get_settings, runtime

    inner = default_strategy(task, app, consumer, **kwargs)
    settings = get_settings()
    key = load_key(settings.data_dir)
    client = runtime().redis
    max_age = settings.env.task_max_age_s
    connection_errors = consumer.connection_errors

    def handle(message: Any, payload: Any, ack: Any, reject: Any, callbacks: Any,
               **more: Any) -> Any:  # fmt: skip
        reason = problem(key, message, payload, time.time(), max_age)
        if reason is None:
            reason = _ran_before(settings, client, str(message.headers["id"]))
        if reason is not None:
            refuse(settings, client, message, reason)
            ack(log, connection_errors)  # dropped for good: never requeued, never run
            return None
        return inner(message, payload, ack, reject, callbacks, **more)

    return handle


def _ran_before(settings: Settings, client: redis.Redis, task_id: str) -> str | None:
    """Why a genuine message must not run (it is a copy of one that finished), or None.

    Redis unreachable here: it runs. At-least-once delivery wins over replay
    protection for that moment; every task is idempotent by its own key.
    """
    try:
        if client.exists(done_key(settings, task_id)):
            return "a copy of a task that already ran"
    except redis.RedisError as exc:
        log.warning("could not check whether task %s ran before: %r", task_id, exc)
    return None


def refuse(settings: Settings, client: redis.Redis, message: Any, reason: str) -> None:
    """Log, count and alert one refused message (never raises: the worker goes on)."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    name, task_id = str(headers.get("task", "?"))[:200], str(headers.get("id", "?"))[:64]
    log.error("refused task message %s[%s]: %s (not run)", name, task_id, reason)
    try:
        client.incr(settings.key(REFUSED))
        from corec_tasks.streams.bus import StreamBus

        subject = reason.split(" (")[0][:64]
        StreamBus(settings, client).alert(
            "error", "task.auth", subject,
            f"a task message was refused and not run: {name}[{task_id}]: {reason}. Someone "
            "who can write to the broker but holds no task key may be sending tasks.",
            {"task": name, "id": task_id})  # fmt: skip
    except redis.RedisError as exc:
        log.warning("could not count or alert the refused message: %r", exc)


def mark_done(task_id: str, state: str) -> None:
    """Record that task ``task_id`` finished (not a retry, which runs again under the
    same id): a copy of its message is refused from now on. Never raises."""
    from celery import states

    from corec_tasks.runtime import get_settings, runtime

    if state == states.RETRY:
        return
    try:
        settings = get_settings()
        runtime().redis.set(done_key(settings, task_id), b"1", ex=settings.env.task_max_age_s)
    except redis.RedisError as exc:  # the task's effect stands; only replay protection lapses
        log.warning("could not record task %s as done: %r", task_id, exc)


class SigningAMQP(AMQP):  # type: ignore[misc]  # Celery ships no types
    """The app's message sender: every task message it sends is signed.

    Per app, not a global ``before_task_publish`` receiver: a process may hold other
    Celery apps (a test's plain client standing in for an intruder) that must not sign
    with CoreC's key. Whatever sends through CoreC's app signs: beat, the API, the CLI,
    ``celery call``, Flower, a task's own callbacks and retries.

    Signed at send, after the call's extra headers are merged in, not when the message
    is built: a retry passes the request's headers on, the old signature among them,
    and Celery merges those last.
    """

    def _create_task_sender(self) -> Callable[..., Any]:
        send = super()._create_task_sender()

        def send_task_message(
            producer: Any, name: str, message: Any, *args: Any,
            headers: dict[str, Any] | None = None, **kwargs: Any,
        ) -> Any:  # fmt: skip
            if headers:
                message.headers.update(headers)
            sign(publisher_key(), message.body, message.headers, time.time())
            return send(producer, name, message, *args, **kwargs)

        return send_task_message


class AuthenticatedTask(Task):  # type: ignore[misc]  # Celery ships no types
    """The base of every task of the app: its messages go through :func:`strategy`."""

    Strategy = "corec_tasks.task_auth:strategy"
