"""Error replies speak the wire, not Python; another type's JSON body is refused (issue 12, 10 and 7).

Hostile requests go out through plain nats-py as binary-mode CloudEvents to real endpoints whose
request types are a plain JSON object, a dataclass, a pydantic model and a protobuf message.
Each must get a 400 whose ``Nats-Service-Error`` and JSON body say what is wrong in JSON's or
the CloudEvent type's words, and name no Python type, module, codec exception or recursion
limit.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pydantic
import pytest
import pytest_asyncio
from google.protobuf import json_format

from eventmicro import Client, Connection, Message, NatsServer, Service, ServiceError
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.orders.v1 import orders_pb2 as orders


@dataclasses.dataclass
class Note:
    text: str
    stars: int


class Review(pydantic.BaseModel):
    product: str
    stars: int


PYTHONISMS = (
    "NoneType",
    "builtins",
    "__main__",
    Note.__module__,
    "maximum recursion",
    "RecursionError",
    "Traceback",
    "ParseError",
    "Failed to parse",
    "<class",
    "Input should be",
    "dict[",
    "list[",
    "Message type",
)
DEEP = b"[" * 10_000 + b"]" * 10_000
PAYMENT_FAILED = json_format.MessageToJson(billing.PaymentFailed(order_id="o-1", reason="declined")).encode()


@pytest_asyncio.fixture
async def served(nats_connection: Connection) -> AsyncIterator[str]:
    name = f"details{uuid.uuid4().hex[:8]}"
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def raw(req: dict[str, Any]) -> dict[str, Any]:
        return req

    @svc.rpc
    async def note(req: Note) -> Note:
        return req

    @svc.rpc
    async def review(req: Review) -> Review:
        return req

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id="o-1")

    async with svc.serving(nats_connection):
        yield name


async def _ask(
    url: str, subject: str, body: bytes, content_type: str, type_: str
) -> tuple[str, str, dict[str, Any]]:
    """A binary-mode CloudEvent request sent with plain nats-py: code, error header, JSON body."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": uuid.uuid4().hex,
        "ce-source": "/hostile",
        "ce-type": type_,  # the endpoint's own type: what reaches the codec is under test
        "content-type": content_type,
    }
    client = await nats.connect(url)
    try:
        reply = await client.request(subject, body, timeout=10, headers=headers)
    finally:
        await client.close()
    reply_headers = reply.headers or {}
    return (
        reply_headers.get("Nats-Service-Error-Code", ""),
        reply_headers.get("Nats-Service-Error", ""),
        (json.loads(reply.data) if reply.data else {}),
    )


CASES = [  # endpoint, body, content type, what the detail must say
    ("raw", b"null", "application/json", "expected an object, got null"),
    ("raw", b"[1, 2]", "application/json", "expected an object, got an array"),
    ("raw", DEEP, "application/json", "nested deeper than 100 levels"),
    ("note", b"null", "application/json", "expected an object (Note), got null"),
    ("note", b'{"text": 5, "stars": "many"}', "application/json", "text: expected a string, got an integer"),
    ("note", b'{"text": "hi"}', "application/json", "missing field 'stars'"),
    ("note", DEEP, "application/json", "nested deeper than 100 levels"),
    ("review", b"null", "application/json", "expected an object, got null"),
    ("review", b'{"product": "kettle", "stars": "many"}', "application/json", "stars: expected an integer"),
    ("review", DEEP, "application/json", "nested deeper than 100 levels"),
    ("place", b"\x0a\xff", "application/protobuf", "not a valid protobuf message"),
    ("place", b"null", "application/json", "expected an object, got null"),
    ("place", b'{"customerId": 5}', "application/json", "does not fit"),
    ("place", DEEP, "application/json", "nested deeper than 100 levels"),
    ("place", b'{"customerId": "c", "note": "x"}', "application/json", "'note' is not a field"),
    ("place", PAYMENT_FAILED, "application/json", "is not a field of shop.orders.v1.PlaceOrder"),
]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"{c[0]}-{c[1][:12]!r}" for c in CASES],
)
async def test_an_error_reply_says_what_is_wrong_in_the_wires_words(
    served: str, nats_server: NatsServer, case: tuple[str, bytes, str, str]
) -> None:
    endpoint, body, content_type, says = case
    type_ = "shop.orders.v1.PlaceOrder" if endpoint == "place" else f"com.example.{endpoint}"
    code, header, document = await _ask(nats_server.url, f"{served}.{endpoint}", body, content_type, type_)

    assert code == "400", (header, document)
    assert says in header
    assert document["detail"] == header
    for python in PYTHONISMS:
        assert python not in header, header
        assert python not in json.dumps(document), document


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"id": "x", "id": "y", "detail": NaN}', b"\xff\xfe"],
    ids=["deep", "duplicates-nan", "not-utf8"],
)
async def test_a_hostile_error_reply_reaches_the_caller_as_its_service_error(
    nats_connection: Connection, body: bytes
) -> None:
    """A foreign service answering with a body no JSON reader should accept: the caller still
    gets a ServiceError with the code (before: a RecursionError escaped from the client)."""

    async def answer(msg: Message) -> None:
        await nats_connection.publish(
            msg.reply, body, headers={"Nats-Service-Error": "broken", "Nats-Service-Error-Code": "502"}
        )

    subject = f"hostile.errors.{uuid.uuid4().hex}"
    responder = await nats_connection.subscribe(subject, answer)
    try:
        with pytest.raises(ServiceError) as caught:
            await Client(nats_connection).call(subject, orders.PlaceOrder(), returns=orders.OrderAccepted)
        assert caught.value.instance_code == 502
    finally:
        await responder.unsubscribe()
