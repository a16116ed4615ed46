"""``refnet``: run the local stack, serve one service, migrate, and operate RefNet."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from deploy.launcher.events_cli import events_app
from shared.settings import SERVICE_NAMES, ServiceSettings

if TYPE_CHECKING:
    # typer carries its own copy of click: TyperGroup's methods take that copy's types.
    from typer._click.core import Command, Context

    from deploy.launcher.stack import StackState

#: The modules with each service's operator commands: ``register(app, keys) -> None``.
SERVICE_COMMANDS = ("deploy.commands.registry", "deploy.commands.intake", "deploy.commands.referral",
                    "deploy.commands.audit")


class _Commands(TyperGroup):
    """The launcher's own commands at once; the services' operator commands (``deploy/commands/``) only when
    one of them, or the list of all, is asked for: ``refnet serve intake`` imports intake and nothing of the
    other services."""

    _loaded = False

    def _load_service_commands(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        extra = typer.Typer()
        keys_app = typer.Typer(help="Key rotation.", no_args_is_help=True)
        extra.add_typer(keys_app, name="keys")
        for name in SERVICE_COMMANDS:
            importlib.import_module(name).register(extra, keys_app)
        group = typer.main.get_group(extra)
        for command_name, command in group.commands.items():
            self.add_command(command, command_name)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None:
            self._load_service_commands()
            found = super().get_command(ctx, cmd_name)
        return found

    def list_commands(self, ctx: Context) -> list[str]:
        self._load_service_commands()
        return super().list_commands(ctx)


app = typer.Typer(help="RefNet: safe referral of trafficked persons between protection agencies.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=_Commands)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
contract_app = typer.Typer(help="The public contract as documents (AsyncAPI, JSON Schemas, OpenAPI).",
                           no_args_is_help=True)
app.add_typer(contract_app, name="contract")
console = Console()
app.add_typer(events_app, name="events")

ServiceName = Annotated[str, typer.Argument(help="registry, intake, referral, audit or console")]
#: What `serve` and `migrate` know: the four APIs and the web console.
SERVABLE = (*SERVICE_NAMES, "console")


def _settings(service: str) -> ServiceSettings:
    if service not in SERVABLE:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(SERVABLE)}")
    module = importlib.import_module(f"services.{service}.settings")
    settings: ServiceSettings = getattr(module, f"{service.capitalize()}Settings")()
    return settings


@app.command()
def serve(service: ServiceName) -> None:
    """Run one service with uvicorn (no migrations: run `refnet migrate` first)."""
    import uvicorn

    from shared.observability import configure_process_logging

    settings = _settings(service)
    # Before the app is built, so warnings raised while it is imported are JSON lines too.
    configure_process_logging(settings.log_level, settings.log_json)
    port = int(os.environ.get("PORT", settings.port))
    module = importlib.import_module(f"services.{service}.app")
    application = module.create_app(settings)
    # Everything imported and built so far (modules, routes, models) lives as long as the process: moved out
    # of the cycle collector's reach, a full collection scans only what requests create, which keeps its
    # pauses short. Here, not in the app factory: test sessions build hundreds of apps in one process.
    gc.collect()
    gc.freeze()
    # log_config=None: uvicorn's loggers propagate to the root handler (JSON) instead of its own plain-text ones.
    # On SIGTERM: stop accepting, let requests in flight finish for up to 20 s, then the lifespan's shutdown
    # (relay, consumers). Kubernetes' terminationGracePeriodSeconds covers preStop + this + that.
    # FORWARDED_ALLOW_IPS (read by uvicorn) names the proxies whose X-Forwarded-For is believed.
    uvicorn.run(application, host=settings.host, port=port, log_level="warning", log_config=None,
                proxy_headers=True, timeout_graceful_shutdown=20)


@app.command()
def migrate(service: ServiceName) -> None:
    """Apply a service's database migrations (idempotent)."""
    from shared.db import with_ssl
    from shared.migrations import upgrade

    settings = _settings(service)
    url = os.environ.get(f"REFNET_{service.upper()}_MIGRATION_DATABASE_URL")
    # The migration role's URL gets the service's TLS settings too (shared.db.with_ssl).
    upgrade(service, with_ssl(url, settings.database_sslmode, settings.database_sslrootcert) if url
            else settings.database_url)


@topics_app.command("ensure")
def topics_ensure(
    partitions: Annotated[int, typer.Option(envvar="REFNET_TOPIC_PARTITIONS")] = 1,
    replication_factor: Annotated[int, typer.Option(envvar="REFNET_TOPIC_REPLICATION_FACTOR")] = 1,
    min_insync_replicas: Annotated[int, typer.Option(envvar="REFNET_TOPIC_MIN_INSYNC_REPLICAS")] = 1,
) -> None:
    """Create the RefNet topics and their dead-letter topics if they are missing (idempotent)."""
    from shared.kafka import configure_from_env, dlq_topic, ensure_topics
    from shared.topics import ALL_TOPICS

    configure_from_env()
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


class _StopRequested(BaseException):
    """Ctrl-C or SIGTERM (``refnet down``) while the launcher starts or runs the stack (a BaseException, as
    KeyboardInterrupt is: no ``except Exception`` on the way may swallow it)."""


@app.command()
def up() -> None:
    """Start PostgreSQL, the broker, the four services and the console; Ctrl-C stops everything."""
    from deploy.launcher.infra import PortInUse
    from deploy.launcher.stack import LauncherLock, Stack, StackConfig, StackState

    config = StackConfig.from_env()
    lock = LauncherLock(config.home)
    if not lock.acquire():
        _already_running(StackState.load(config.home), lock.holder())
        return
    stale = StackState.load(config.home)
    if stale is not None and stale.launcher_alive():  # a launcher from before the lock: running all the same
        lock.release()
        _already_running(stale, None)
        return
    if stale is not None:
        # Its launcher is gone (and holding the lock, we know no other is starting): it describes nothing.
        console.print(f"[dim]·[/dim] removing the state of an earlier launcher (pid {stale.launcher_pid}), "
                      "which is no longer running")
        (config.home / "state.json").unlink(missing_ok=True)
    stack = Stack(config, say=lambda text: console.print(f"[dim]·[/dim] {text}"))
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        # The children are in sessions of their own: only the launcher gets the terminal's Ctrl-C, and it
        # stops them in order. Raised wherever the launcher is (starting or waiting); once stopping, ignored.
        if not stopping:
            raise _StopRequested(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C, `refnet down`, terminal closed
        signal.signal(signum, on_signal)
    exit_code = 0
    try:
        try:
            stack.check_ports()
            stack.start_infrastructure()
            stack.migrate()
            stack.prepare_services()
            stack.start_services()
            stack.wait_ready()
            state = stack.save_state()
            _print_table(state.services, state.database_server, state.broker)
            console.print(f"logs: {stack.logs}/<service>.log   stop: Ctrl-C (or `refnet down`)")
            while True:
                time.sleep(0.5)
                for name, proc in stack.services.items():
                    if proc.poll() is not None:
                        console.print(f"[red]{name} exited ({proc.returncode}); see {stack.logs}/{name}.log[/red]")
                        exit_code = 1
                if exit_code:
                    break
        except PortInUse as exc:
            console.print(f"[red]{exc}[/red]")
            exit_code = 2
        except Exception as exc:
            console.print(f"[red]could not start the stack: {exc}[/red]")
            exit_code = 1
    except _StopRequested:  # outside the handlers above, so a signal while one of them prints is caught too
        pass
    finally:
        stopping = True
        _print_if_possible("stopping ...")
        try:
            stack.stop()
        finally:
            lock.release()
        _print_if_possible("stopped")
    if exit_code:
        raise typer.Exit(exit_code)


def _print_if_possible(text: str) -> None:
    # After SIGHUP the terminal may be gone: the stop must not fail for want of somewhere to say so.
    with contextlib.suppress(OSError):
        console.print(text)


def _already_running(state: StackState | None, holder: int | None) -> None:
    """What a second ``refnet up`` says: the running stack, left alone."""
    if state is not None and state.launcher_alive() and (holder is None or holder == state.launcher_pid):
        _print_table(state.services, state.database_server, state.broker, title="RefNet is already running here")
        console.print(f"launcher pid {state.launcher_pid}   status: `refnet status`   stop: `refnet down`")
        return
    who = f" (pid {holder})" if holder else ""
    console.print(f"A RefNet launcher{who} is starting or stopping the stack here; see `refnet status`.")


def _print_table(services: dict[str, str], database: str, broker: str, title: str = "RefNet is running") -> None:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("where")
    for name, url in services.items():
        table.add_row(name, url)
    table.add_row("PostgreSQL", database)
    table.add_row("broker", broker)
    console.print(table)


def _outbox_cells(outbox: dict[str, object] | None) -> tuple[str, str, str]:
    """Retained rows, unpublished rows and the last republish, for the status table ("-" where unknown)."""
    if not outbox:
        return "-", "-", "-"

    def count(key: str) -> str:
        value = outbox.get(key)
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"

    last = outbox.get("last_republish")
    if isinstance(last, dict):
        republish = (f"{last.get('at', '?')}: {last.get('rows', '?')} rows of {last.get('topic', '?')} "
                     f"({last.get('reason', '?')})")
    else:
        republish = "never" if "last_republish" in outbox else "-"
    return count("retained"), count("unpublished"), escape(republish)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Where each service runs, whether it is ready, and its outbox (rows kept, last republish)."""
    from deploy.launcher.stack import StackState, readiness, refnet_home

    state = StackState.load(refnet_home())
    if state is None or not state.launcher_alive():
        if as_json:
            print(json.dumps({"running": False}))
        elif state is None:
            console.print("RefNet is not running here (no .refnet/state.json); start it with `make run`.")
        else:
            console.print(f"RefNet is not running here (the launcher, pid {state.launcher_pid}, is gone); "
                          "start it with `make run`.")
        raise typer.Exit(1)
    services: dict[str, dict[str, object]] = {}
    for name, url in state.services.items():
        ready, outbox = readiness(url)
        services[name] = {"url": url, "state": ready, "outbox": outbox}
    if as_json:
        print(json.dumps({"running": True, "launcher_pid": state.launcher_pid, "services": services,
                          "database_server": state.database_server, "broker": state.broker}, indent=2))
        return
    table = Table(title="RefNet")
    for column in ("service", "url", "state", "outbox rows kept", "unpublished", "last republish"):
        table.add_column(column)
    for name, info in services.items():
        figures = info["outbox"]
        table.add_row(name, str(info["url"]), str(info["state"]),
                      *_outbox_cells(figures if isinstance(figures, dict) else None))
    console.print(table)
    console.print(f"PostgreSQL: {state.database_server}   broker: {state.broker}   "
                  f"launcher pid: {state.launcher_pid}")


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
def down(
    wait: Annotated[float, typer.Option(min=0, help="seconds to wait for everything to stop")] = 60.0,
) -> None:
    """Stop a stack started by `refnet up` (in another terminal): services, then the broker, then PostgreSQL."""
    from deploy.launcher.stack import StackState, refnet_home, started_at

    home = refnet_home()
    state = StackState.load(home)
    if state is None:
        console.print("nothing to stop")
        return
    if state.launcher_alive():
        with contextlib.suppress(ProcessLookupError):  # it may have ended since
            os.kill(state.launcher_pid, signal.SIGTERM)
        console.print(f"asked the launcher (pid {state.launcher_pid}) to stop everything")
        deadline = time.monotonic() + wait
        while state.launcher_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if state.launcher_alive():
            console.print(f"[red]the launcher is still stopping after {wait:.0f} s[/red]")
            raise typer.Exit(1)
        console.print("stopped")
        return
    # The launcher was killed without stopping its children (they normally die with it): stop those still
    # running -- the same pid with the same start time, never a process that reused the pid -- in order.
    left = state.alive_pids()
    console.print(f"the launcher (pid {state.launcher_pid}) is gone; "
                  + (f"stopping what it left: {', '.join(left)}" if left else "none of its processes still runs"))
    order = [n for n in left if n not in ("broker", "postgres")] + [n for n in ("broker", "postgres") if n in left]
    for name in order:
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for its clients).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(left[name], signal.SIGINT if name == "postgres" else signal.SIGTERM)
        deadline = time.monotonic() + 15
        while started_at(left[name]) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    (home / "state.json").unlink(missing_ok=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
