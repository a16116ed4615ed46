"""A reference case system for RefNet: hear of new referrals to your agency, fetch the minimised case,
acknowledge.

Copy this one file into your own project and adapt ``CaseSystem.store_case`` to your case system. It speaks
to RefNet through ``refnet_client``, the typed client RefNet publishes for integrators (it needs only httpx,
authlib, joserfc and pydantic, none of RefNet's services), and uses two more well-kept libraries (aiokafka,
standardwebhooks).

What it does, for each ``org.refnet.referral.requested.v1`` addressed to your agency:

1. reads the minimised case from intake (``GET /cases/{id}`` with ``X-Purpose: referral``): only the data
   categories the referral shares, and only while the person's consent permits it;
2. stores it (here: logs which fields arrived -- never their values);
3. acknowledges the referral (``POST /referrals/{id}/transitions {"to": "received"}``).

It hears of referrals in one of two ways (pick one per deployment):

``kafka``   a consumer group on ``refnet.delivery.<agency_id>``: CloudEvents in binary mode (``ce_*``
            headers), offsets committed only after an event is handled.
``webhook`` a Standard Webhooks receiver: it subscribes with ``POST /subscriptions``, verifies every
            delivery's ``webhook-signature`` with the subscription's secret, answers 204 at once and
            handles the event in the background.

Delivery is at least once on both channels: an event can come twice, so events are deduplicated on their
id (``ce_id`` / ``webhook-id``, the same id on every redelivery). Events of one referral arrive in order.

    python case_system.py --credentials .refnet/credentials/unhcr.json --stack-state .refnet/state.json kafka
    python case_system.py --credentials .refnet/credentials/unhcr.json --stack-state .refnet/state.json webhook

Logs name referrals, cases and events by their (pseudonymous) ids only: no personal data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from standardwebhooks import Webhook, WebhookVerificationError

from refnet_client import AsyncRefNet, Case, Credentials, Endpoints, RefNetError

REFERRAL_REQUESTED = "org.refnet.referral.requested.v1"
#: Only what this program needs: read shared cases, read and move referrals, subscribe to events.
SCOPES = "cases:read referrals:read referrals:write events:read"
#: Open referral states in which the recipient can still read the case and acknowledge.
OPEN_STATES = {"requested", "received", "accepted", "in_progress", "on_hold"}
MAX_WEBHOOK_BODY = 1024 * 1024
T = TypeVar("T")

log = logging.getLogger("case_system")


def say(event: str, **fields: object) -> None:
    """One log line, ``event key=value ...``: ids and facts only, never a person's data."""
    log.info(" ".join([event, *(f"{key}={value}" for key, value in fields.items())]))


# --- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    credentials: Credentials
    endpoints: Endpoints
    bootstrap: str
    group: str
    start_from: str
    acting_user: str
    inbox: str
    listen: str
    public_url: str | None
    case_wait_seconds: float
    # The agency's broker user (`refnet agency broker-user <agency_id>`): it may read its delivery topic only.
    kafka_options: dict[str, Any] = field(default_factory=dict)

    @property
    def agency_id(self) -> str:
        return str(self.credentials.agency_id)


def kafka_options_from_env() -> dict[str, Any]:
    """SASL/SCRAM over TLS from REFNET_KAFKA_SECURITY_PROTOCOL (SASL_SSL on a production broker),
    REFNET_KAFKA_SASL_USERNAME, REFNET_KAFKA_SASL_PASSWORD_FILE (a file, not the password itself) and
    REFNET_KAFKA_SSL_CAFILE (the cluster's CA); nothing for the local stack's broker."""
    protocol = os.environ.get("REFNET_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        password_file = os.environ.get("REFNET_KAFKA_SASL_PASSWORD_FILE", "")
        if not password_file or not os.environ.get("REFNET_KAFKA_SASL_USERNAME"):
            raise SystemExit("REFNET_KAFKA_SASL_USERNAME and REFNET_KAFKA_SASL_PASSWORD_FILE are required for SASL")
        options.update(sasl_mechanism=os.environ.get("REFNET_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                       sasl_plain_username=os.environ["REFNET_KAFKA_SASL_USERNAME"],
                       sasl_plain_password=Path(password_file).read_text().strip())
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=os.environ.get("REFNET_KAFKA_SSL_CAFILE") or None)
    return options


def load_config(args: argparse.Namespace) -> Config:
    """Flags first, then environment variables, then the local stack's state file, then local defaults."""
    credentials = Credentials.load(args.credentials)
    stack: dict[str, Any] = json.loads(Path(args.stack_state).read_text()) if args.stack_state else {}

    def service_url(name: str, explicit: str | None, default: str) -> str:
        # `.refnet/state.json` maps a service to its URL; `refnet status --json` to {"url": ..., "state": ...}
        entry = stack.get("services", {}).get(name)
        from_stack = entry.get("url") if isinstance(entry, dict) else entry
        return str(explicit or os.environ.get(f"REFNET_{name.upper()}_URL") or from_stack or default).rstrip("/")

    if not credentials.agency_id:
        raise SystemExit(f"{args.credentials} names no agency_id")
    agency_id = credentials.agency_id
    return Config(
        credentials=credentials,
        endpoints=Endpoints(intake=service_url("intake", args.intake_url, Endpoints.intake),
                            referral=service_url("referral", args.referral_url, Endpoints.referral)),
        bootstrap=args.bootstrap or os.environ.get("REFNET_KAFKA_BOOTSTRAP") or stack.get("broker") or "127.0.0.1:9092",
        group=args.group or f"case-system-{agency_id}", start_from=args.start_from, acting_user=args.acting_user,
        inbox=args.inbox, listen=args.listen, public_url=args.public_url, case_wait_seconds=args.case_wait,
        kafka_options=kafka_options_from_env(),
    )


# --- RefNet's REST API, through refnet_client ------------------------------------------------------


class Transient:
    """Retries what is transient (network, 429, 5xx) until the service answers for real: losing a referral to
    a blip is worse than waiting. Any other refusal is an answer (``RefNetError``) for the caller to read."""

    MAX_BACKOFF_SECONDS = 30.0

    async def __call__(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = 0.5
        while True:
            try:
                return await call()
            except httpx.TransportError as exc:
                say("service_unreachable", call=what, error=type(exc).__name__)
            except RefNetError as exc:
                if exc.status != 429 and exc.status < 500:
                    raise
                say("service_busy", call=what, status=exc.status)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.MAX_BACKOFF_SECONDS)


# --- the case system --------------------------------------------------------------------------------


class HandledEvents:
    """Ids of the events already handled, so a redelivery changes nothing (at-least-once delivery).

    In your case system, record the id in the same database transaction as the case you store.
    """

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS handled_events (source TEXT, id TEXT, handled_at TEXT, "
                        "PRIMARY KEY (source, id))")

    def seen(self, source: str, event_id: str) -> bool:
        found = self.db.execute("SELECT 1 FROM handled_events WHERE source = ? AND id = ?", (source, event_id))
        return found.fetchone() is not None

    def remember(self, source: str, event_id: str) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO handled_events VALUES (?, ?, ?)",
                            (source, event_id, datetime.now(UTC).isoformat()))


class CaseSystem:
    """What happens when a referral arrives: read the minimised case, store it, acknowledge."""

    def __init__(self, refnet: AsyncRefNet, config: Config, handled: HandledEvents) -> None:
        self.refnet = refnet
        self.config = config
        self.handled = handled
        self.retrying = Transient()

    async def on_event(self, source: str, event_id: str, event_type: str, data: dict[str, Any]) -> None:
        if self.handled.seen(source, event_id):
            say("duplicate_skipped", event_id=event_id)
            return
        if event_type == REFERRAL_REQUESTED and data.get("to_agency") == self.config.agency_id:
            await self.take_in(data)
        else:
            # The topic also carries our own referrals' events and later states; nothing to do for them here.
            say("event_noted", event_id=event_id, type=event_type, referral_id=data.get("referral_id"))
        self.handled.remember(source, event_id)

    async def take_in(self, referral: dict[str, Any]) -> None:
        referral_id, case_id = str(referral["referral_id"]), str(referral["case_id"])
        say("referral_requested", referral_id=referral_id, case_id=case_id, from_agency=referral.get("from_agency"),
            pathway=referral.get("pathway"), priority=referral.get("priority"))
        case = await self.read_case(referral_id, case_id)
        if case is None:
            return
        self.store_case(referral_id, case)
        try:
            moved = await self.retrying("acknowledge", lambda: self.refnet.transition(referral_id, "received"))
        except RefNetError as refused:
            if refused.status == 409:
                # Someone at the agency (or an earlier run of this program) acknowledged it, or it was cancelled.
                say("not_acknowledged", referral_id=referral_id, reason=refused.type,
                    current_state=refused.problem.get("current_state"))
            else:
                say("acknowledge_failed", referral_id=referral_id, status=refused.status, reason=refused.type)
            return
        say("acknowledged", referral_id=referral_id, status=moved.status)

    async def read_case(self, referral_id: str, case_id: str) -> Case | None:
        """The minimised case, or None if it is no longer ours to read.

        A 404 has two meanings: intake has not yet heard of the referral (events travel in seconds), or the
        person's consent was withdrawn (the referral is then cancelled). The referral's state tells them apart.
        """
        deadline = time.monotonic() + self.config.case_wait_seconds
        delay = 0.25
        while True:
            try:
                return await self.retrying("read_case", lambda: self.refnet.read_case(case_id, purpose="referral"))
            except RefNetError as refused:
                if refused.status != 404:
                    say("case_read_failed", referral_id=referral_id, status=refused.status, reason=refused.type)
                    return None
            try:
                referral = await self.retrying("referral", lambda: self.refnet.referral(referral_id))
                status, history = referral.status, referral.history or []
            except RefNetError:
                status, history = "unknown", []
            if status not in OPEN_STATES:
                say("referral_closed", referral_id=referral_id, status=status,
                    reason_code=history[-1].reason_code if history else None)
                return None
            if time.monotonic() >= deadline:
                say("case_not_readable", referral_id=referral_id, case_id=case_id, status=status)
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def store_case(self, referral_id: str, case: Case) -> None:
        """Adapt this: create or update the person's file in your case system.

        The case holds only the fields of the referral's shared categories; the rest are absent, not null.
        """
        fields = sorted([*(f"person.{name}" for name in case.person),
                         *(f"screening.{name}" for name in case.screening)])
        say("case_read", referral_id=referral_id, case_id=case.id, is_minor=case.is_minor,
            fields=",".join(fields) or "-")


# --- channel 1: the Kafka delivery topic ------------------------------------------------------------


async def consume_delivery_topic(config: Config, case_system: CaseSystem) -> None:
    topic = f"refnet.delivery.{config.agency_id}"
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=config.bootstrap, group_id=config.group,
        enable_auto_commit=False,  # commit only after an event is handled: at least once, never at most once
        auto_offset_reset=config.start_from,  # only for a group without committed offsets
        session_timeout_ms=10000, heartbeat_interval_ms=3000,
        # The topic appears with the agency's first referral: notice it within seconds, not minutes.
        metadata_max_age_ms=5000,
        **config.kafka_options,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 15
        while not consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for partition in consumer.assignment():
            await consumer.position(partition)  # fixes where a new group starts before we say we listen
        say("listening", mode="kafka", agency=config.agency_id, topic=topic, group=config.group,
            partitions=len(consumer.assignment()) or "none-yet")
        async for record in consumer:
            headers = {key: value.decode() for key, value in record.headers}
            event_id, event_type = headers.get("ce_id"), headers.get("ce_type")
            try:
                data = json.loads(record.value or b"")
            except ValueError:
                data = None
            if not event_id or not event_type or not isinstance(data, dict):
                # Not a RefNet CloudEvent; a real system would set it aside for a person to look at.
                say("undecodable_skipped", partition=record.partition, offset=record.offset)
            else:
                await case_system.on_event(headers.get("ce_source", ""), event_id, event_type, data)
            await consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
    finally:
        await consumer.stop()


# --- channel 2: signed webhooks ---------------------------------------------------------------------


class WebhookReceiver:
    """An HTTP endpoint for RefNet's webhook deliveries (Standard Webhooks).

    It checks the signature, queues the event and answers 204 within milliseconds: RefNet retries any
    delivery that is slow or not 2xx. Events are handled one at a time, in arrival order, by ``run``.
    (Python's ``http.server`` keeps this file dependency-free; in production mount ``accept`` in your
    web framework behind TLS. Persist queued events before answering 2xx if they must survive a crash.)
    """

    def __init__(self, listen: str, path: str = "/refnet/webhook") -> None:
        host, _, port = listen.rpartition(":")
        self.path = path
        self.secret: str | None = None
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status = receiver.accept(self.path, dict(self.headers.items()), self.rfile, loop)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self.send_response(405)
                self.send_header("Allow", "POST")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                return None  # request lines would carry client addresses; ``accept`` logs what matters

        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def accept(self, path: str, headers: dict[str, str], body_stream: Any, loop: asyncio.AbstractEventLoop) -> int:
        """-> the HTTP status to answer. Runs in the server's thread."""
        headers = {name.lower(): value for name, value in headers.items()}
        if path != self.path:
            return 404
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return 411
        if length > MAX_WEBHOOK_BODY:
            return 413
        body = body_stream.read(length)
        if self.secret is None:
            return 503
        try:
            event = Webhook(self.secret).verify(body, headers)
        except (WebhookVerificationError, ValueError):  # ValueError: a malformed signature header
            say("webhook_refused", reason="signature-not-verified")
            return 401
        message_id = headers["webhook-id"]
        loop.call_soon_threadsafe(self.queue.put_nowait, (message_id, event))
        return 204

    async def run(self, case_system: CaseSystem) -> None:
        threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True).start()
        try:
            while True:
                message_id, event = await self.queue.get()
                # webhook-id is the event id, the same on every retry of the delivery.
                await case_system.on_event(str(event.get("source", "")), message_id, str(event.get("type", "")),
                                           event.get("data") or {})
        finally:
            self.server.shutdown()
            self.server.server_close()


async def serve_webhooks(config: Config, case_system: CaseSystem, refnet: AsyncRefNet) -> None:
    receiver = WebhookReceiver(config.listen)  # bound now, so no delivery is refused while we subscribe
    url = config.public_url or f"http://127.0.0.1:{receiver.port}{receiver.path}"
    try:
        subscription = await case_system.retrying("subscribe", lambda: refnet.subscribe(url, [REFERRAL_REQUESTED]))
    except RefNetError as refused:
        raise RuntimeError(f"subscription refused: {refused}") from refused
    receiver.secret = subscription.secret  # keep it in your secret store; RefNet shows it only once
    say("listening", mode="webhook", agency=config.agency_id, url=url, subscription_id=subscription.id)
    try:
        await receiver.run(case_system)
    finally:
        # This program subscribes on every start, so it unsubscribes on every stop. A deployed case system
        # subscribes once and keeps its subscription (and its place in the feed) across restarts.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(refnet.unsubscribe(subscription.id), 5)
        say("unsubscribed", subscription_id=subscription.id)


# --- entry point ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A reference case system for RefNet.")
    parser.add_argument("mode", choices=["kafka", "webhook"], help="how to hear of referrals")
    credentials = os.environ.get("CASE_SYSTEM_CREDENTIALS")
    parser.add_argument("--credentials", default=credentials, required=credentials is None,
                        help="your agency's credentials JSON (env CASE_SYSTEM_CREDENTIALS)")
    parser.add_argument("--stack-state", help="a local stack's .refnet/state.json (or `refnet status --json` output)")
    parser.add_argument("--intake-url", help="env REFNET_INTAKE_URL; default http://127.0.0.1:8002")
    parser.add_argument("--referral-url", help="env REFNET_REFERRAL_URL; default http://127.0.0.1:8003")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (env REFNET_KAFKA_BOOTSTRAP)")
    parser.add_argument("--group", help="Kafka consumer group; default case-system-<agency_id>")
    parser.add_argument("--start-from", choices=["earliest", "latest"], default="earliest",
                        help="where a new consumer group starts (default earliest: nothing is missed)")
    parser.add_argument("--listen", default="127.0.0.1:8090", help="webhook receiver address (port 0: any)")
    parser.add_argument("--public-url", help="the URL RefNet posts to; default http://127.0.0.1:<port>/refnet/webhook")
    parser.add_argument("--acting-user", default="case-system", help="who acts in RefNet's audit log")
    parser.add_argument("--inbox", default=":memory:", help="SQLite file of handled event ids (default in memory)")
    parser.add_argument("--case-wait", type=float, default=30.0,
                        help="seconds to wait for a new referral's case to become readable")
    return parser.parse_args(argv)


def connect(config: Config, transport: httpx.AsyncBaseTransport | None = None) -> AsyncRefNet:
    """The agency's RefNet client: tokens with its private key (``private_key_jwt``), renewed before they expire,
    asking only for the scopes this program needs; every call names who acts (``X-Acting-User``)."""
    return AsyncRefNet(config.credentials, config.endpoints, scope=SCOPES, acting_user=config.acting_user,
                       timeout=10, transport=transport)


async def main(config: Config, mode: str) -> None:
    async with connect(config) as refnet:
        case_system = CaseSystem(refnet, config, HandledEvents(config.inbox))
        try:  # fail fast on wrong credentials
            await refnet.token()
        except RefNetError as refused:
            raise SystemExit(f"token refused: {refused}") from refused
        token = refnet.oauth.token or {}
        say("token_obtained", scope=str(token.get("scope", "")).replace(" ", ","),
            expires_in=token.get("expires_in"))
        if mode == "kafka":
            await consume_delivery_topic(config, case_system)
        else:
            await serve_webhooks(config, case_system, refnet)


def run(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns out the steps
    config = load_config(args)

    async def until_signalled() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await main(config, args.mode)
        say("stopped")

    asyncio.run(until_signalled())


if __name__ == "__main__":
    run()
