"""The reply subject is the caller's choice: a service must not be a confused deputy.

A request whose reply subject is a JetStream API subject, an event subject or a wildcard
would make the service publish its reply there, with its own identity and permissions
(``ce-source`` of the service, its NATS credentials). Such requests are refused: not
handled, no reply, counted. A stricter allow-list is one argument away.

The caller's own reply subjects cannot be guessed: one seen by a service it called does not
let anyone answer (or forge "no responders" for) the caller's next call.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from eventmicro import Client, Connection, Event, NatsServer, Service, Stream
from eventmicro import cloudevents_nats as binding
from eventmicro.transport.connection import Message
from schemas.shop.orders.v1 import orders_pb2 as orders

sys.path.insert(0, str(Path(__file__).parent))
from raw_nats import Raw

Eventually = Callable[..., Awaitable[None]]


def _service(**options: object) -> tuple[Service, list[str]]:
    svc = Service("deputy", version="1.0.0", **options)  # type: ignore[arg-type]
    ran: list[str] = []

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        ran.append(req.customer_id)
        return orders.OrderAccepted(order_id=req.customer_id)

    return svc, ran


def _request(customer: str) -> binding.NATSMessage:
    event = Event.of(
        orders.PlaceOrder(customer_id=customer), source="/attacker", type="shop.orders.v1.PlaceOrder"
    )
    return binding.to_binary(event, None)


@pytest.mark.parametrize(
    "reply",
    [
        "events.shop.orders.v1.OrderAccepted",  # an event subject: a forged event from the service
        "deadletter.deputy.place",
        "$JS.API.STREAM.DELETE.VICTIM",  # the service's permissions would delete a stream
        "$SRV.PING",
        "_INBOX.*",
        "_INBOX.>",
    ],
)
async def test_a_reply_subject_the_service_must_not_publish_to_is_refused(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually, reply: str
) -> None:
    svc, ran = _service()
    seen: list[Message] = []

    async def spy(msg: Message) -> None:
        seen.append(msg)

    watch = "_INBOX.watch" if reply.startswith("_INBOX") else reply.split(".", maxsplit=1)[0] + ".>"
    spying = await nats_connection.subscribe(watch, spy)
    async with svc.serving(service_conn) as running:
        attack = _request("attacker")
        await nats_connection.publish("deputy.place", attack.data, headers=attack.headers, reply=reply)
        # a normal call on the same subscription is answered after the attack was dealt with
        ok = await Client(nats_connection).call(
            "deputy.place", orders.PlaceOrder(customer_id="honest"), returns=orders.OrderAccepted
        )
        assert ok.order_id == "honest"
        await eventually(lambda: running.stats["place"].refused == 1)
        await nats_connection.flush()
        assert ran == ["honest"]  # the refused request never ran
        assert [m for m in seen if m.headers and m.headers.get("ce-source", "").startswith("/deputy")] == []
        assert running.stats["place"].turned_away()["refused_reply"] == 1
    await spying.unsubscribe()


async def test_a_stream_survives_a_reply_aimed_at_the_jetstream_api(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, _ = _service(streams=[Stream("VICTIM", subjects=["victim.>"])])
    async with svc.serving(service_conn) as running:
        attack = _request("attacker")
        await nats_connection.publish(
            "deputy.place", attack.data, headers=attack.headers, reply="$JS.API.STREAM.DELETE.VICTIM"
        )
        await eventually(lambda: running.stats["place"].refused == 1)
        info = await nats_connection.request("$JS.API.STREAM.INFO.VICTIM", b"", timeout=2)
        assert json.loads(info.data)["config"]["name"] == "VICTIM"
        await nats_connection.request("$JS.API.STREAM.DELETE.VICTIM", b"", timeout=2)  # clean up


async def test_an_allow_list_of_reply_prefixes(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, ran = _service(reply_prefixes=["_INBOX."])
    async with svc.serving(service_conn) as running:
        attack = _request("elsewhere")
        await nats_connection.publish(
            "deputy.place", attack.data, headers=attack.headers, reply="custom.replies.1"
        )
        ok = await Client(nats_connection).call(
            "deputy.place", orders.PlaceOrder(customer_id="inbox"), returns=orders.OrderAccepted
        )
        assert ok.order_id == "inbox"  # nats-py's requests reply to _INBOX.
        await eventually(lambda: running.stats["place"].refused == 1)
        assert ran == ["inbox"]


async def test_a_request_without_a_reply_subject_still_runs(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, ran = _service()
    async with svc.serving(service_conn):
        message = _request("fire-and-forget")
        await nats_connection.publish("deputy.place", message.data, headers=message.headers)
        await eventually(lambda: ran == ["fire-and-forget"])


def test_reply_prefixes_must_be_subject_prefixes() -> None:
    with pytest.raises(ValueError, match="reply_prefixes"):
        Service("deputy", version="1.0.0", reply_prefixes=[""])


@pytest_asyncio.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[Raw]:
    client = await Raw.connect(nats_server)
    yield client
    await client.close()


async def test_a_reply_subject_seen_once_does_not_let_anyone_answer_the_next_call(
    service_conn: Connection, nats_connection: Connection, raw: Raw, eventually: Eventually
) -> None:
    """Any service a caller calls sees the caller's reply subject. Reply tokens came from a
    counter, so after one call the next token was known: a forged reply (or a forged
    ``503`` status, read as no responders) published there won the race against the real
    one. Tokens carry 64 random bits now."""
    seen: list[str] = []
    genuine = asyncio.Event()

    async def responder(msg: Message) -> None:
        seen.append(msg.reply)
        if len(seen) > 1:
            await genuine.wait()  # the second call is answered once the attacker has tried
        await nats_connection.publish(msg.reply, b"genuine")

    await nats_connection.subscribe("review.forge", responder)
    assert (await service_conn.request("review.forge", b"1", timeout=5)).data == b"genuine"
    prefix, _, token = seen[0].rpartition(".")
    second = asyncio.create_task(service_conn.request("review.forge", b"2", timeout=5))
    await eventually(lambda: len(seen) == 2)
    for step in range(1, 50):  # the next tokens as a counter would make them, plain and suffixed
        for guess in (f"{int(token, 16) + step:x}", f"{int(token[:-16] or '0', 16) + step:x}{token[-16:]}"):
            raw.hpub(f"{prefix}.{guess}".encode(), b"NATS/1.0\r\n\r\n", b"forged")
            raw.hpub(f"{prefix}.{guess}".encode(), b"NATS/1.0 503\r\n\r\n")
    await raw.round_trip()
    await service_conn.flush()
    genuine.set()
    assert (await second).data == b"genuine"
