"""``corec metrics serve|show``: the cluster's Prometheus exporter."""

from __future__ import annotations

import signal
import threading

import click

from corec_tasks.cli.output import console, handle_errors, settings

#: The exporter's port (9464 is the one OpenTelemetry's Prometheus exporter uses).
DEFAULT_PORT = 9464


@click.group()
def metrics() -> None:
    """Prometheus metrics of the cluster (blocks, cycles, streams, plugins)."""


@metrics.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0 exposes it beyond this host).")  # fmt: skip
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@handle_errors
def serve(host: str, port: int) -> None:
    """Serve /metrics until interrupted; each scrape reads the cluster's state."""
    from prometheus_client import start_http_server

    from corec_tasks.metrics.exporter import build_registry

    registry = build_registry(settings())
    server, thread = start_http_server(port, addr=host, registry=registry)
    console.print(f"corec metrics on http://{host}:{port}/metrics", highlight=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)


@metrics.command("show")
@handle_errors
def show() -> None:
    """Print one scrape in the Prometheus text format."""
    from prometheus_client import generate_latest

    from corec_tasks.metrics.exporter import build_registry

    click.echo(generate_latest(build_registry(settings())).decode(), nl=False)
