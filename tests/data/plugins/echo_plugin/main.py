"""Test plugin: a command handler, registered through ``register_commands``."""


def _echo(args, ctx):  # type: ignore[no-untyped-def]
    return {"echo": args, "instance": ctx.settings.instance_id}


def register_commands(registry):  # type: ignore[no-untyped-def]
    registry.register("echo", _echo)
