"""``cerver stress``: run a stress test on a Cerver server over HTTP, show progress while it
runs, then a table of the results."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cerver.stress.kinds import KINDS

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_INTERVAL_S = 0.25

stress_app = typer.Typer(
    help="Compare compute providers with a stress test.", no_args_is_help=False
)
console = Console()


def _fail(response: httpx.Response) -> None:
    try:
        error = response.json()["error"]
        message = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text
    console.print(f"[red]error {response.status_code}[/red] {message}")
    raise typer.Exit(1)


def _table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['mode']} · {result['kind']} · {result['sample_size']} runs each")
    for column in ("#", "provider", "score", "p50 ms", "p95 ms", "p99 ms", "success", "$/run"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for i, name in enumerate(result.get("ranking", []), start=1):
        r = result["results"][name]

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:,.0f}"

        table.add_row(
            str(i),
            name,
            f"{r['score']:.1f}",
            ms(r["p50_ms"]),
            ms(r["p95_ms"]),
            ms(r["p99_ms"]),
            f"{100 * r['success_rate']:.1f}%",
            f"{r['cost_per_run_usd']:.6f}",
        )
    return table


def _poll(client: httpx.Client, result: dict[str, Any]) -> dict[str, Any]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(f"stress test {result['id']}", total=1.0)
        while result["status"] == "running":
            time.sleep(POLL_INTERVAL_S)
            response = client.get(f"/gateway/stress-tests/{result['id']}")
            if response.status_code != 200:
                _fail(response)
            result = response.json()
            progress.update(bar, completed=result["progress"])
        progress.update(bar, completed=1.0)
    return result


@stress_app.callback(invoke_without_command=True)
def stress(
    kind: str = typer.Option("preview_launch", help=f"one of: {', '.join(sorted(KINDS))}"),
    provider: list[str] = typer.Option(None, "--provider", "-p", help="repeat; default all"),
    samples: int = typer.Option(100, "--samples", "-n", help="runs per provider"),
    mode: str = typer.Option("simulate", help="simulate | canary (canary needs a token)"),
    runtime: str | None = typer.Option(None, help="required runtime, e.g. node"),
    task: str | None = typer.Option(None, help="what the test is for"),
    run_async: bool = typer.Option(False, "--async", help="always run as a polled job"),
    url: str = typer.Option(DEFAULT_URL, envvar="CERVER_URL", help="Cerver server URL"),
    as_json: bool = typer.Option(False, "--json", help="print the raw JSON result"),
) -> None:
    """Run a stress test and show the ranking."""
    body: dict[str, Any] = {"kind": kind, "sample_size": samples, "mode": mode, "async": run_async}
    if provider:
        body["providers"] = provider
    if runtime:
        body["requirements"] = {"runtime": runtime}
    if task:
        body["task"] = task
    headers = {}
    token = os.environ.get("CERVER_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif mode == "canary":
        console.print("[red]a canary needs CERVER_API_TOKEN[/red]")
        raise typer.Exit(2)
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        try:
            response = client.post("/gateway/stress-tests", json=body)
        except httpx.HTTPError as exc:
            console.print(f"[red]cannot reach {url}[/red]: {exc}")
            raise typer.Exit(1) from exc
        if response.status_code != 200:
            _fail(response)
        result = _poll(client, response.json())
    if result["status"] == "failed":
        console.print(f"[red]stress test failed[/red]: {result.get('error')}")
        raise typer.Exit(1)
    if as_json:
        console.print_json(json.dumps(result))
        return
    console.print(_table(result))
    rec = result.get("recommendation")
    if rec:
        console.print(f"[bold green]recommended:[/bold green] {rec['provider']} — {rec['reason']}")
    for name, reason in result.get("excluded", {}).items():
        console.print(f"[yellow]excluded[/yellow] {name}: {reason}")
