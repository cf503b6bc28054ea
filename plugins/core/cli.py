"""``corec api``: serve the HTTP API in the foreground (uvicorn)."""

from __future__ import annotations

import os

import click

from corec_tasks.cli.output import handle_errors


@click.command()
@click.option(
    "--host",
    default=lambda: os.environ.get("COREC_API_HOST", "127.0.0.1"),
    show_default="$COREC_API_HOST or 127.0.0.1",
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=lambda: int(os.environ.get("COREC_API_PORT", "8000")),
    show_default="$COREC_API_PORT or 8000",
    help="Port to listen on.",
)
@click.option("--capital", type=click.Choice(["celery", "direct"]), default="celery",
              show_default=True,
              help="Capital actions through the capital_pool Celery tasks (workers needed), "
                   "or in this process (one node).")  # fmt: skip
@handle_errors
def api(host: str, port: int, capital: str) -> None:
    """Serve the HTTP API (login, capital, portfolios, orders, positions, health,
    metrics; OpenAPI at /docs). Tokens are signed with COREC_JWT_SECRET."""
    import uvicorn

    from corec_tasks.redis_conn import redis_client
    from corec_tasks.runtime import get_settings
    from corec_tasks.storage.migrate import current
    from plugins.aaa.service import AAAPlugin
    from plugins.aaa.tokens import secret_from_env
    from plugins.core.api import Capital, CeleryCapital, DirectCapital, create_app

    settings = get_settings()
    secret_from_env()  # refuse to start without a usable signing secret
    aaa = AAAPlugin.from_url(settings.database_url)
    backend: Capital = CeleryCapital() if capital == "celery" else DirectCapital()
    checks = {
        "redis": lambda: bool(redis_client(settings).ping()),
        "postgres": lambda: current(settings.database_url),
    }
    app = create_app(aaa, backend, health_checks=checks)
    click.echo(f"CoreC API on http://{host}:{port} (OpenAPI: /docs), capital via {capital}")
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1
    # (or FORWARDED_ALLOW_IPS) and hand the app that as the peer; the app decides which
    # proxies to believe itself (COREC_TRUSTED_PROXIES, plugins.core.clients).
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)
