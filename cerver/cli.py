"""`cerver serve | token | stress` — the command line."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Annotated

import typer

from cerver.config import ConfigError, Settings, prepare_home
from cerver.stress.cli import stress_app

app = typer.Typer(help="Cerver on Ray: one stable doorway into execution.", no_args_is_help=True)
token_app = typer.Typer(help="Accounts and API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _settings(host: str | None = None, port: int | None = None) -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    return settings.model_copy(update=updates)


def _cgroups_notice(settings: Settings) -> None:
    """Say what per-sandbox cgroups enforce here; CERVER_CGROUPS=required and unmet: exit."""
    from cerver.adapters.local import cgroups
    from cerver.errors import ProviderError

    typer.echo(cgroups.probe(settings)[1])
    try:
        cgroups.require(settings)
    except ProviderError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _prepare_home(settings: Settings) -> None:
    prepare_home(settings)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (CERVER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (CERVER_PORT).")] = None,
) -> None:
    """Start Ray (or join RAY_ADDRESS), deploy the Serve app, and serve until Ctrl-C/SIGTERM."""
    from cerver.serve_app.ingress import apply_ingress_env

    settings = _settings(host, port)
    _prepare_home(settings)
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # Our own Ray: its processes inherit the front door's variables (set before Ray's
        # Serve modules are imported). A cluster we join has them from its `ray start`.
        apply_ingress_env(settings)

    import ray
    from ray import serve as ray_serve

    from cerver.serve_app.app import application
    from cerver.store import Store

    if settings.local_provider:
        from cerver.adapters.local.isolation import policy_notice

        typer.echo(policy_notice(settings))
        _cgroups_notice(settings)
    store = Store.open(settings.database_url)
    if store.accounts.count() == 0:
        account = store.accounts.get_or_create("default")
        token = store.accounts.issue_token(account.id)
        typer.echo("First start: created account 'default'. Its token, shown once:")
        typer.echo(f"CERVER_API_TOKEN={token}")
    if address:
        ray.init(address=address, namespace=settings.ray_namespace, log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 2,
            include_dashboard=False,
            namespace=settings.ray_namespace,
            log_to_driver=False,
        )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        ray_serve.start(http_options={"host": settings.host, "port": settings.port})
        ray_serve.run(application(settings), name="cerver", route_prefix="/", blocking=False)
        typer.echo(f"Cerver listening on http://{settings.host}:{settings.port} (docs: /docs)")
        sys.stdout.flush()
        stop.wait()
    finally:
        typer.echo("shutting down")
        _shut_down(own_cluster=not address)


# SIGTERM to `cerver serve` ends it within this budget, whatever its sandboxes are doing.
SHUTDOWN_BUDGET_S = 8.0


def _shut_down(*, own_cluster: bool) -> None:
    """Stop serving, fast and without leftovers.

    A Ray this process started is all ours: Serve's own graceful drain (which waited 30 s
    for its controller) is skipped, Ray's processes are stopped, and every process still
    below this one (sandbox processes that are stopped or hung included) is killed. On a
    cluster this process only joined, the Serve app is shut down (bounded) and Ray is left
    running for the others."""
    import ray
    from ray import serve as ray_serve

    from cerver import process_tree

    deadline = time.monotonic() + SHUTDOWN_BUDGET_S
    if not own_cluster:
        stopper = threading.Thread(target=ray_serve.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout=SHUTDOWN_BUDGET_S - 1.0)
        ray.shutdown()
        return
    process_tree.adopt_orphans()
    ray.shutdown()
    left = process_tree.kill_descendants(timeout_s=max(0.5, deadline - time.monotonic()))
    if left:
        typer.echo(f"warning: {len(left)} processes could not be stopped: {sorted(left)}", err=True)


@token_app.command("create")
def token_create(
    account: Annotated[str, typer.Option("--account", help="Account name (created if new).")],
) -> None:
    """Create the account if needed and print a new token for it (the token alone)."""
    from cerver.store import Store

    settings = _settings()
    _prepare_home(settings)
    store = Store.open(settings.database_url)
    found = store.accounts.get_or_create(account)
    typer.echo(store.accounts.issue_token(found.id))


@token_app.command("revoke")
def token_revoke(token: Annotated[str, typer.Argument(help="The token to revoke.")]) -> None:
    """Revoke a token; later requests with it answer 401."""
    from cerver.store import Store

    settings = _settings()
    store = Store.open(settings.database_url)
    if not store.accounts.revoke(token):
        typer.echo("error: no such token", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


app.add_typer(stress_app, name="stress")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def relay(ctx: typer.Context) -> None:
    """Serve this machine as a compute of your account (`cerver relay --help`)."""
    from cerver.relay.agent import main as relay_main

    raise typer.Exit(relay_main(list(ctx.args)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
