"""Bare payloads (no CloudEvent) are accepted from plain clients, without opening a way
around the CloudEvent checks: anything that looks like a CloudEvent is read as one (so the
``ce-type`` check of issue 12 still applies), and hostile bare bodies get a 400, not a crash.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest_asyncio
from nats.aio.client import Client as PlainClient

from eventmicro import Connection, Event, Service
from eventmicro import cloudevents_nats as binding
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.orders.v1 import orders_pb2 as orders


@dataclass
class Note:
    text: str


def _service() -> tuple[Service, list[object]]:
    svc = Service("guarded", version="1.0.0")
    handled: list[object] = []

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        handled.append(req)
        return orders.OrderAccepted(order_id=req.customer_id)

    @svc.rpc
    async def note(req: Note) -> Note:
        handled.append(req)
        return req

    return svc, handled


@pytest_asyncio.fixture
async def plain(nats_url: str) -> AsyncIterator[PlainClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def test_dropping_the_headers_does_not_dodge_the_type_check(
    service_conn: Connection, plain: PlainClient
) -> None:
    """A structured CloudEvent of another type, sent without its Content-Type, and a message
    with a lone mixed-case ``Ce-Type`` header are CloudEvents, never bare payloads."""
    svc, handled = _service()
    wrong = Event.of(billing.PaymentFailed(order_id="o1"), source="/evil")
    async with svc.serving(service_conn):
        structured = binding.to_structured(wrong, None)
        reply = await plain.request("guarded.place", structured.data, timeout=5)
        assert (reply.headers or {})["Nats-Service-Error-Code"] == "400"
        assert "shop.billing.v1.PaymentFailed" in (reply.headers or {})["Nats-Service-Error"]
        body = billing.PaymentFailed(order_id="o1").SerializeToString()
        reply = await plain.request("guarded.place", body, headers={"Ce-Type": "x.y"}, timeout=5)
        assert (reply.headers or {})["Nats-Service-Error-Code"] == "400"
        assert "specversion" in (reply.headers or {})["Nats-Service-Error"]
    assert handled == []


async def test_hostile_bare_bodies_get_a_400(service_conn: Connection, plain: PlainClient) -> None:
    svc, handled = _service()
    deep = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with svc.serving(service_conn) as running:
        for subject, body, headers in (
            ("guarded.note", deep, None),
            ("guarded.place", deep, None),
            ("guarded.note", b'{"text": NaN}', None),
            ("guarded.place", b"\x0a\xff\xff\xff\xff\x0f", None),  # a length past the end
            ("guarded.note", b'{"text": "x"}', {"Content-Type": "application/xml"}),
        ):
            reply = await plain.request(subject, body, headers=headers, timeout=5)
            assert (reply.headers or {})["Nats-Service-Error-Code"] == "400", (subject, body[:20])
            answer = json.loads(reply.data)
            assert answer["code"] == 400
            assert "Error" not in answer["detail"]  # no Python exception names
        assert running.stats["note"].num_errors == 3
        # and it still serves
        ok = await plain.request("guarded.note", b'{"text": "fine"}', timeout=5)
        assert json.loads(ok.data) == {"text": "fine"}
    assert handled == [Note(text="fine")]
