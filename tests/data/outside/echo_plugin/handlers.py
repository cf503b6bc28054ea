"""echo_plugin's consumer of ``echo_events``: each word lands in its own table."""

from typing import Any

import psycopg

from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings


def on_event(settings: Settings, payload: dict[str, Any]) -> None:
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        conn.execute("INSERT INTO echo_words (word) VALUES (%s)", (payload["word"],))


def echo_command(settings: Settings, args: dict[str, Any]) -> dict[str, Any]:
    """The ``echo`` command of corec_commands: answers with its arguments."""
    if "boom" in args:
        raise ValueError("boom")
    return {"echoed": args}
