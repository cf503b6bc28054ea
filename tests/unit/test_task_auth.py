"""Task message authentication (corec_tasks/task_auth.py) as pure functions: what a
worker accepts and refuses, on messages built the way kombu delivers them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from corec_tasks.task_auth import FUTURE_SKEW_S, H_SIG, H_TS, problem, sign

KEY = b"k" * 32
NOW = 1_800_000_000.0
MAX_AGE = 3600


@dataclass
class Delivered:
    """A received message as the worker sees it: headers, raw body, content type."""

    headers: dict[str, Any]
    body: bytes
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    payload: Any = field(default=None)


def signed(name: str = "capital_pool.withdraw", args: list[Any] | None = None,
           at: float = NOW) -> Delivered:  # fmt: skip
    body = (args or ["alice", "100.00", "k1"], {"grant": "g"}, {"callbacks": None})
    headers: dict[str, Any] = {"task": name, "id": "id-1", "eta": None, "expires": None,
                               "retries": 0, "timelimit": (None, None), "root_id": "id-1",
                               "parent_id": None, "group": None, "argsrepr": "x"}  # fmt: skip
    sign(KEY, body, headers, at)
    # What travels: JSON headers (a tuple becomes a list) and the JSON body bytes.
    return Delivered(json.loads(json.dumps(headers)), json.dumps(body).encode())


def check(m: Delivered, key: bytes = KEY, now: float = NOW) -> str | None:
    return problem(key, m, m.payload, now, MAX_AGE)


def test_a_signed_message_passes_and_display_headers_are_not_covered() -> None:
    m = signed()
    assert check(m) is None
    m.headers["argsrepr"] = "anything"  # shown in Flower, never acted on
    assert check(m) is None


@pytest.mark.parametrize("change", [
    lambda m: m.headers.update(task="capital_pool.contribute"),   # another task's name
    lambda m: m.headers.update(id="id-2"),                        # another id
    lambda m: m.headers.update(eta="2030-01-01T00:00:00"),        # re-timed
    lambda m: m.headers.update(retries=1),
    lambda m: m.headers.update(group="g1"),
    lambda m: m.headers.update({H_TS: m.headers[H_TS] + 1}),      # re-dated
    lambda m: setattr(m, "body", m.body.replace(b"100.00", b"999.00")),  # other arguments
])  # fmt: skip
def test_any_change_to_what_the_worker_acts_on_breaks_the_signature(change: Any) -> None:
    m = signed()
    change(m)
    assert check(m) == "bad signature"


def test_another_key_is_refused() -> None:
    assert check(signed(), key=b"x" * 32) == "bad signature"


def test_unsigned_old_future_and_foreign_messages_are_refused() -> None:
    m = signed()
    del m.headers[H_SIG]
    assert check(m) == "unsigned task message"
    m = signed()
    m.headers[H_TS] = str(m.headers[H_TS])  # a number in a string is not a timestamp
    assert check(m) == "unsigned task message"
    assert check(signed(at=NOW - MAX_AGE - 1)) == f"older than {MAX_AGE}s"
    assert check(signed(at=NOW - MAX_AGE + 1)) is None
    assert check(signed(at=NOW + FUTURE_SKEW_S + 5)) == "signed in the future"
    v1 = signed()
    v1.payload = {"task": "capital_pool.withdraw", "args": []}  # protocol 1: body decoded
    assert check(v1) == "not a protocol 2 task message"
    pickled = signed()
    pickled.content_type = "application/x-python-serialize"
    assert check(pickled) == "content 'application/x-python-serialize' is not JSON"
    zipped = signed()
    zipped.headers["compression"] = "application/x-gzip"
    assert check(zipped) == "compressed messages are not accepted"
