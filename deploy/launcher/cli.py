"""``refnet``: run the local stack, serve one service, migrate, and operate RefNet."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import os
import signal
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.settings import SERVICE_NAMES, ServiceSettings

app = typer.Typer(help="RefNet: safe referral of trafficked persons between protection agencies.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
keys_app = typer.Typer(help="Key rotation.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
contract_app = typer.Typer(help="The public contract as documents (AsyncAPI, JSON Schemas, OpenAPI).",
                           no_args_is_help=True)
app.add_typer(contract_app, name="contract")
console = Console()

ServiceName = Annotated[str, typer.Argument(help="registry, intake, referral or audit")]


def _settings(service: str) -> ServiceSettings:
    if service not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVICE_NAMES)}")
    module = importlib.import_module(f"services.{service}.settings")
    settings: ServiceSettings = getattr(module, f"{service.capitalize()}Settings")()
    return settings


@app.command()
def serve(service: ServiceName) -> None:
    """Run one service with uvicorn (no migrations: run `refnet migrate` first)."""
    import uvicorn

    settings = _settings(service)
    port = int(os.environ.get("PORT", settings.port))
    module = importlib.import_module(f"services.{service}.app")
    application = module.create_app(settings)
    # Everything imported and built so far (modules, routes, models) lives as long as the process: moved out
    # of the cycle collector's reach, a full collection scans only what requests create, which keeps its
    # pauses short. Here, not in the app factory: test sessions build hundreds of apps in one process.
    gc.collect()
    gc.freeze()
    uvicorn.run(application, host=settings.host, port=port, log_level="warning", proxy_headers=True)


@app.command()
def migrate(service: ServiceName) -> None:
    """Apply a service's database migrations (idempotent)."""
    from shared.migrations import upgrade

    settings = _settings(service)
    url = os.environ.get(f"REFNET_{service.upper()}_MIGRATION_DATABASE_URL") or settings.database_url
    upgrade(service, url)


@topics_app.command("ensure")
def topics_ensure(
    partitions: Annotated[int, typer.Option(envvar="REFNET_TOPIC_PARTITIONS")] = 1,
    replication_factor: Annotated[int, typer.Option(envvar="REFNET_TOPIC_REPLICATION_FACTOR")] = 1,
    min_insync_replicas: Annotated[int, typer.Option(envvar="REFNET_TOPIC_MIN_INSYNC_REPLICAS")] = 1,
) -> None:
    """Create the RefNet topics and their dead-letter topics if they are missing (idempotent)."""
    from shared.kafka import dlq_topic, ensure_topics
    from shared.topics import ALL_TOPICS

    bootstrap = os.environ.get("REFNET_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    names = [*ALL_TOPICS, *map(dlq_topic, ALL_TOPICS)]
    config = {"min.insync.replicas": str(min_insync_replicas)} if min_insync_replicas > 1 else None
    asyncio.run(ensure_topics(bootstrap, names, partitions=partitions, replication_factor=replication_factor,
                              config=config))
    console.print(f"topics present: {', '.join(names)}")


@contract_app.command("export")
def contract_export(
    check: Annotated[bool, typer.Option("--check", help="only compare; exit 1 if the docs are out of date")] = False,
) -> None:
    """Write docs/asyncapi.yaml, docs/events.md, docs/events/*.schema.json and docs/openapi/*.json from the code."""
    from deploy import contract

    found = contract.drift() if check else contract.export()
    for path in found.changed:
        console.print(f"{'out of date' if check else 'wrote'}: {path}")
    for path in found.stale:
        console.print(f"{'no longer generated' if check else 'removed'}: {path}")
    if check and found:
        console.print("[red]the contract documents differ from the code: run `refnet contract export`[/red]")
        raise typer.Exit(1)
    if not found:
        console.print("contract documents are up to date")


@app.command()
def up() -> None:
    """Start PostgreSQL, the broker and the four services; Ctrl-C stops everything."""
    from deploy.launcher.infra import PortInUse
    from deploy.launcher.stack import Stack, StackConfig

    stack = Stack(StackConfig.from_env(), say=lambda text: console.print(f"[dim]·[/dim] {text}"))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.check_ports()
        stack.start_infrastructure()
        stack.migrate()
        stack.prepare_services()
        stack.start_services()
        stack.wait_ready()
        state = stack.state()
        state.save(stack.config.home)
        _print_table(state.services, state.database_server, state.broker)
        console.print(f"logs: {stack.logs}/<service>.log   stop: Ctrl-C (or `refnet down`)")
        while not stop.wait(0.5):
            for name, proc in stack.services.items():
                if proc.poll() is not None:
                    console.print(f"[red]{name} exited ({proc.returncode}); see {stack.logs}/{name}.log[/red]")
                    stop.set()
    except PortInUse as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    except Exception as exc:
        console.print(f"[red]could not start the stack: {exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        console.print("stopping ...")
        stack.stop()
        console.print("stopped")


def _print_table(services: dict[str, str], database: str, broker: str) -> None:
    table = Table(title="RefNet is running")
    table.add_column("what")
    table.add_column("where")
    for name, url in services.items():
        table.add_row(name, url)
    table.add_row("PostgreSQL", database)
    table.add_row("broker", broker)
    console.print(table)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Where each service runs and whether it is ready."""
    from deploy.launcher.stack import StackState, probe, refnet_home

    state = StackState.load(refnet_home())
    if state is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            console.print("RefNet is not running here (no .refnet/state.json); start it with `make run`.")
        raise typer.Exit(1)
    services = {name: {"url": url, "state": probe(url)} for name, url in state.services.items()}
    if as_json:
        print(json.dumps({"running": True, "services": services, "database_server": state.database_server,
                          "broker": state.broker}, indent=2))
        return
    table = Table(title="RefNet")
    for column in ("service", "url", "state"):
        table.add_column(column)
    for name, info in services.items():
        table.add_row(name, info["url"], info["state"])
    console.print(table)
    console.print(f"PostgreSQL: {state.database_server}   broker: {state.broker}")


@app.command()
def demo(
    no_complete: Annotated[bool, typer.Option("--no-complete", help="stop once the referral is delivered, "
                                              "leaving it to UNHCR's case system")] = False,
    ack_timeout: Annotated[float, typer.Option(min=0, help="seconds to wait for a UNHCR case system to "
                                               "acknowledge before the demo does it as UNHCR")] = 5.0,
) -> None:
    """Run one referral along the SOP's main pathway (IOM -> UNHCR) against the running stack, step by step."""
    from deploy.launcher.demo import run
    from deploy.launcher.stack import refnet_home

    raise typer.Exit(run(console, refnet_home(), ack_timeout=ack_timeout, complete=not no_complete))


@app.command()
def down() -> None:
    """Stop a stack started by `refnet up` (in another terminal)."""
    from deploy.launcher.stack import StackState, refnet_home

    state = StackState.load(refnet_home())
    if state is None:
        console.print("nothing to stop")
        return
    try:
        os.kill(state.launcher_pid, signal.SIGTERM)
        console.print(f"asked the launcher (pid {state.launcher_pid}) to stop everything")
    except ProcessLookupError:
        console.print("the launcher is gone; stopping what it left")
        for pid in state.pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        (refnet_home() / "state.json").unlink(missing_ok=True)


def _register_service_commands() -> None:
    """A service adds its own commands in ``services/<name>/cli.py``: ``register(app, keys) -> None``."""
    for service in SERVICE_NAMES:
        try:
            module = importlib.import_module(f"services.{service}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"services.{service}.cli":
                raise
            continue
        module.register(app, keys_app)


_register_service_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
