"""``corec commands send|drain``: commands on ``corec_commands``, answers on ``corec_responses``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from corec_tasks.cli.output import handle_errors, print_json, settings
from corec_tasks.errors import CorecError


@click.group()
def commands() -> None:
    """Send commands to the core or a plugin and read their answers."""


@commands.command("send")
@click.argument("target")
@click.argument("command")
@click.option("--args", "args_json", default=None, help="The command's args, a JSON object.")
@click.option("--wait", is_flag=True, help="Wait for the answer and print it.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds --wait waits.")  # fmt: skip
@handle_errors
def send_(target: str, command: str, args_json: str | None, wait: bool, timeout: float) -> None:
    """Send COMMAND to TARGET (``core`` or a plugin's name); print its id, or its answer.

    The command is signed with the stream key (``COREC_STREAM_KEY``, else
    ``<data_dir>/stream.key``): workers run only commands signed with the key they
    hold. The answer comes from a worker running ``corec.commands.dispatch`` (beat runs
    it every 2 s) or from ``corec commands drain``; --wait shows only an answer signed
    with the same key (a forged one is ignored and alerted). Exit status 1 on an error
    answer (a refused command included), 2 when --wait times out.
    """
    from corec_tasks.commands import last_response_id, send, wait_response
    from corec_tasks.redis_conn import redis_client

    args: Any = None
    if args_json is not None:
        try:
            args = json.loads(args_json)
        except ValueError as exc:
            raise CorecError(f"--args is not JSON: {exc}") from None
        if not isinstance(args, dict):
            raise CorecError("--args must be a JSON object")
    s = settings()
    client = redis_client(s)
    since = last_response_id(s, client)
    sent = send(s, client, target, command, args)
    if not wait:
        print_json({"id": sent.id})
        return
    answer = wait_response(s, client, sent.id, entry=sent.entry, since=since, timeout_s=timeout)
    if answer is None:
        click.echo(f"no answer to {sent.id} within {timeout:g} s (is a worker with beat running, "
                   f"or `corec commands drain`?)", err=True)  # fmt: skip
        sys.exit(2)
    print_json(answer)
    if "error" in answer and answer.get("error") is not None:
        sys.exit(1)


@commands.command("drain")
@handle_errors
def drain_() -> None:
    """Answer the waiting commands once, in this process (no worker needed)."""
    from corec_tasks.commands import drain, registry_for
    from corec_tasks.nucleus import Nucleus
    from corec_tasks.redis_conn import redis_client

    s = settings()
    nucleus = Nucleus(s)
    nucleus.initialize()
    print_json(drain(s, redis_client(s), registry_for(nucleus)))
