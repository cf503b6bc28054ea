"""``corec keys init|show-paths``: the deployment's keys, made once and shared by nodes."""

from __future__ import annotations

import click

from corec_tasks.cli.output import console, handle_errors, print_json, table


@click.group()
def keys() -> None:
    """Make the deployment's keys once (init) and see what each node needs (show-paths).

    Every node of a deployment must hold the same keys: a worker signs and checks task
    messages with the task key, producers and consumers sign and check the money streams
    with the stream key, plugins declare theirs (the capital grants' key). Run
    `corec keys init` once, on the first node; copy the files it lists (mode 0600) to
    the same data folder on every other node, or export the variables. A node that has
    neither refuses to start, naming the key.
    """


@keys.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def init_cmd(as_json: bool) -> None:
    """Make each missing key file in the data folder (a key whose variable is set is
    left to the environment); existing files are kept, never replaced."""
    from corec_tasks.keys import init
    from corec_tasks.runtime import get_settings

    done = init(get_settings())
    rows = [(p.spec.env, str(p.path) if not p.from_env else "-", state, p.owner)
            for p, state in done]  # fmt: skip
    if as_json:
        print_json([dict(zip(("env", "file", "state", "owner"), r, strict=True)) for r in rows])
        return
    console.print(table("deployment keys", ["variable", "file", "state", "declared by"], rows))
    console.print("Give every other node the same keys: copy these files to its data folder "
                  "(mode 0600), or export the variables.")  # fmt: skip


@keys.command("show-paths")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def show_paths(as_json: bool) -> None:
    """Where each key is read from on this node, whether it is there, and which
    processes need it (never the key itself). Exit 1 if one is missing."""
    from corec_tasks.keys import locate
    from corec_tasks.runtime import get_settings

    places = locate(get_settings())
    rows = [{"env": p.spec.env, "file": str(p.path), "source": "environment" if p.from_env
             else ("file" if p.present else "MISSING"), "needed_by": p.spec.needed_by,
             "declared_by": p.owner, "purpose": p.spec.purpose} for p in places]  # fmt: skip
    if as_json:
        print_json(rows)
    else:
        console.print(table("deployment keys", ["variable", "file", "read from", "needed by"],
                            [(r["env"], r["file"], r["source"], ", ".join(r["needed_by"]))
                             for r in rows]))  # fmt: skip
    if any(not p.present for p in places):
        raise SystemExit(1)
