"""echo_plugin's consumer of ``echo_events``: each word lands in its own table."""

from typing import Any

import psycopg

from corec_tasks.db import libpq_url
from corec_tasks.settings import Settings


def on_event(settings: Settings, payload: dict[str, Any]) -> None:
    with psycopg.connect(libpq_url(settings.database_url)) as conn:
        conn.execute("INSERT INTO echo_words (word) VALUES (%s)", (payload["word"],))
