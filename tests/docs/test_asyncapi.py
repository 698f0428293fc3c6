"""AsyncAPI documents from Service objects (and from hand-made $SRV.INFO answers), checked against
the official AsyncAPI 3.0.0 JSON schema (npm @asyncapi/specs) and against what eventmicro really
puts on the wire: headers and bodies built by the binding validate against the document."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml
from google.protobuf import json_format

from eventmicro import Broadcast, Context, NotFound, Ordered, Service, event_type
from eventmicro import cloudevents_nats as binding
from eventmicro.cli.main import main
from eventmicro.cli.run import load_services
from eventmicro.docs.asyncapi import asyncapi_for_services, asyncapi_from_discovery
from eventmicro.service.discovery import _endpoint_metadata
from eventmicro.service.handlers import HandlerKind
from eventmicro.wire.codecs import python_type_name, type_name_of
from eventmicro.wire.event import Event
from eventmicro.wire.service_errors import error_reply
from schemas.shop.orders.v1 import orders_pb2 as orders

SHOP = ("subscribers.orders", "subscribers.inventory", "subscribers.billing", "subscribers.notifications",
        "subscribers.audit")  # fmt: skip
SPEC = (
    Path(__file__).resolve().parents[1]
    / "interop/js/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
)
CE_REQUIRED = ["ce-specversion", "ce-id", "ce-source", "ce-type"]


def asyncapi_validator() -> Any:
    """The official AsyncAPI 3.0.0 schema, bundled without remote $refs, as a validator."""
    if not SPEC.is_file():
        message = "the AsyncAPI schema comes from npm: run `npm ci` in tests/interop/js (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    schema = json.loads(SPEC.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft7Validator  # what its $schema says
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def spec() -> Any:
    return asyncapi_validator()


def problems(spec: Any, document: dict[str, Any]) -> list[str]:
    """What the AsyncAPI schema and the reference rules find wrong (empty: a valid document)."""
    found = [f"{e.json_path}: {e.message[:200]}" for e in spec.iter_errors(document)]
    for ref in _refs(document):
        try:
            resolve(document, ref)
        except (KeyError, TypeError):
            found.append(f"unresolved $ref {ref}")
    for name, operation in document.get("operations", {}).items():
        channel = operation["channel"]["$ref"]
        for message in operation.get("messages", []):  # a subset of the channel's messages
            if not message["$ref"].startswith(f"{channel}/messages/"):
                found.append(f"{name}: {message['$ref']} is not a message of {channel}")
        reply = operation.get("reply")
        if reply:
            for message in reply["messages"]:
                if not message["$ref"].startswith(f"{reply['channel']['$ref']}/messages/"):
                    found.append(f"{name}: reply {message['$ref']} is not in its reply channel")
    return found


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def message(document: dict[str, Any], ref: str) -> dict[str, Any]:
    """The message object a channel's or operation's reference stands for."""
    found = resolve(document, ref)
    return resolve(document, found["$ref"]) if "$ref" in found else found  # type: ignore[no-any-return]


def errors(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """Validation errors of ``instance`` against a schema of the document (its components resolve)."""
    root = {**schema, "components": document["components"]}
    return [e.message for e in jsonschema.Draft7Validator(root).iter_errors(instance)]


@pytest.fixture(scope="module")
def shop() -> list[Service]:
    return [service for module in SHOP for service in load_services(module)]


@pytest.fixture(scope="module")
def shop_document(shop: list[Service]) -> dict[str, Any]:
    return asyncapi_for_services(shop, title="shop", server="nats://user:secret@nats.example:4222")


# --- the reference shop ------------------------------------------------------------------------


def test_the_shop_document_is_valid_asyncapi_3(spec: Any, shop_document: dict[str, Any]) -> None:
    assert problems(spec, shop_document) == []
    assert shop_document["asyncapi"] == "3.0.0"
    assert shop_document["info"]["title"] == "shop"
    assert shop_document["info"]["version"] == "1.0.0"
    assert shop_document["servers"] == {"nats": {"host": "nats.example:4222", "protocol": "nats"}}
    assert "secret" not in json.dumps(shop_document)


def test_a_document_missing_something_required_fails_validation(
    spec: Any, shop_document: dict[str, Any]
) -> None:
    broken = json.loads(json.dumps(shop_document))
    del broken["info"]["version"]
    assert problems(spec, broken)
    broken = json.loads(json.dumps(shop_document))
    broken["operations"]["orders.place"]["action"] = "publish"  # AsyncAPI 2 wording
    assert problems(spec, broken)
    broken = json.loads(json.dumps(shop_document))
    broken["operations"]["orders.place"]["reply"]["address"] = {"location": "the inbox"}
    assert problems(spec, broken)
    broken = json.loads(json.dumps(shop_document))
    del broken["components"]["schemas"]["shop.orders.v1.OrderAccepted"]
    assert problems(spec, broken) == ["unresolved $ref #/components/schemas/shop.orders.v1.OrderAccepted"]


def test_every_rpc_endpoint_has_its_reply_schema_and_the_error_reply(
    shop: list[Service], shop_document: dict[str, Any]
) -> None:
    endpoints = [(s, spec) for s in shop for spec in s.handlers if spec.kind.value == "rpc"]
    assert len(endpoints) == 6
    for service, spec in endpoints:
        operation = shop_document["operations"][f"{service.name}.{spec.name}"]
        assert operation["action"] == "receive"
        assert resolve(shop_document, operation["channel"]["$ref"])["address"] == spec.subject
        assert operation["bindings"] == {"nats": {"queue": service.name, "bindingVersion": "0.1.0"}}
        request = message(shop_document, operation["messages"][0]["$ref"])
        assert request["payload"] == {"$ref": f"#/components/schemas/{type_name_of(spec.message_types[0])}"}
        reply = operation["reply"]
        assert resolve(shop_document, reply["channel"]["$ref"])["address"] is None  # the inbox
        first, error = (message(shop_document, m["$ref"]) for m in reply["messages"])
        assert first["payload"] == {"$ref": f"#/components/schemas/{type_name_of(spec.reply_type)}"}
        assert first["contentType"] == "application/protobuf"
        assert first["headers"]["properties"]["ce-type"]["const"] == type_name_of(spec.reply_type)
        assert error["headers"]["required"] == ["Nats-Service-Error", "Nats-Service-Error-Code"]
    place = shop_document["components"]["schemas"]["shop.orders.v1.OrderAccepted"]
    assert set(place["properties"]) == {"orderId", "totalCents"}


def test_events_have_channels_per_subject_and_operations_per_handler(shop_document: dict[str, Any]) -> None:
    channels = shop_document["channels"]
    operations = shop_document["operations"]
    placed = channels["events.shop.orders.v1.OrderPlaced"]
    assert placed["address"] == "events.shop.orders.v1.OrderPlaced"
    assert list(placed["messages"]) == ["shop.orders.v1.OrderPlaced"]
    assert operations["orders.publish.shop.orders.v1.OrderPlaced"]["action"] == "send"
    durable = operations["inventory.on_order_placed"]
    assert durable["action"] == "receive"
    assert durable["channel"] == {"$ref": "#/channels/events.shop.orders.v1.OrderPlaced"}
    assert "bindings" not in durable  # a JetStream consumer, not a queue group
    assert "durable consumer inventory-on_order_placed" in durable["description"]
    assert "deadletter.inventory.on_order_placed" in durable["description"]
    broadcast = operations["notifications.on_confirmed"]
    assert "bindings" not in broadcast
    assert "broadcast" in broadcast["description"]
    wildcard = channels[operations["audit.record"]["channel"]["$ref"].rpartition("/")[2]]
    assert wildcard["address"] == "events.shop.>"
    assert len(wildcard["messages"]) == len(operations["audit.record"]["messages"]) == 8


def test_every_message_carries_the_cloudevents_headers(shop_document: dict[str, Any]) -> None:
    for name, found in shop_document["components"]["messages"].items():
        if name in ("eventmicro.ServiceError", "eventmicro.EmptyReply"):
            continue
        headers = found["headers"]
        assert headers["type"] == "object"
        assert headers["required"] == CE_REQUIRED, name
        for header in ("ce-time", "ce-subject", "ce-datacontenttype", "ce-dataschema", "traceparent",
                       "tracestate", "ce-traceparent"):  # fmt: skip
            assert header in headers["properties"], (name, header)
        assert ("ce-timeoutms" in headers["properties"]) == name.endswith(".request"), name


def test_what_eventmicro_sends_validates_against_the_document(shop_document: dict[str, Any]) -> None:
    """Headers and bodies built by the binding, as a service and a client build them."""
    placed = orders.OrderPlaced(order_id="o-1", customer_id="c", total_cents=2**40, currency="EUR")
    placed.items.add(sku="sku-001", quantity=2, unit_price_cents=1250)
    placed.placed_at.GetCurrentTime()
    event = Event.of(
        placed, source="/orders", extensions={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    )
    wire = binding.to_binary(event, None)
    found = message(shop_document, "#/components/messages/shop.orders.v1.OrderPlaced")
    assert errors(shop_document, found["headers"], wire.headers) == []
    assert errors(shop_document, found["payload"], json_format.MessageToDict(placed)) == []
    assert errors(shop_document, found["payload"], {"orderId": 5})
    assert errors(shop_document, found["headers"], {**wire.headers, "ce-type": "shop.orders.v1.Other"})

    request = orders.PlaceOrder(customer_id="c")
    call = Event.of(
        request, source="/eventmicro/client", type=python_type_name(request), extensions={"timeoutms": 1500}
    )
    wire = binding.to_binary(call, None)
    found = message(shop_document, "#/components/messages/orders.place.request")
    assert errors(shop_document, found["headers"], wire.headers) == []
    assert errors(shop_document, found["headers"], {k: v for k, v in wire.headers.items() if k != "ce-id"})

    headers, body = error_reply(NotFound("no order o-9"))
    found = message(shop_document, "#/components/messages/eventmicro.ServiceError")
    assert errors(shop_document, found["headers"], headers) == []
    assert errors(shop_document, found["payload"], json.loads(body)) == []


# --- other payload types, deliveries, discovery ---------------------------------------------------


@dataclasses.dataclass
class Sum:
    numbers: list[int]


class Total(pydantic.BaseModel):
    total: int
    note: str | None = None


@event_type("shop.notes.v1.NoteAdded")
@dataclasses.dataclass
class NoteAdded:
    text: str


def calculator() -> Service:
    svc = Service("calc", version="2.0.0-rc.1", description="Adds numbers", publishes=[NoteAdded])

    @svc.rpc(idempotent=True)
    async def add(req: Sum) -> Total | None:
        return Total(total=sum(req.numbers)) if req.numbers else None

    @svc.rpc
    async def echo(req: str) -> bytes:
        return req.encode()

    @svc.rpc
    async def forget(req: dict[str, int], ctx: Context) -> None:
        return None

    @svc.subscribe(delivery=Broadcast())
    async def noted(event: NoteAdded) -> None:
        return None

    @svc.subscribe(subject="events.shop.*.v1.OrderPlaced", delivery=Ordered())
    async def replay(event: orders.OrderPlaced) -> None:
        return None

    return svc


def test_json_text_and_bytes_payloads_optional_replies_and_other_deliveries(spec: Any) -> None:
    document = asyncapi_for_services([calculator()])
    assert problems(spec, document) == []
    assert document["info"]["title"] == "calc"
    assert "servers" not in document
    operations = document["operations"]
    add = operations["calc.add"]
    assert "Idempotent" in add["description"]
    replies = [message(document, m["$ref"]) for m in add["reply"]["messages"]]
    assert [r["name"] for r in replies] == [f"{__name__}.Total", "EmptyReply", "ServiceError"]
    assert replies[0]["contentType"] == "application/json"
    assert replies[0]["payload"] == {"$ref": f"#/components/schemas/{__name__}.Total"}
    assert replies[0]["headers"]["properties"]["ce-type"] == {  # no CloudEvent type of its own
        "type": "string",
        "description": f"eventmicro sends {__name__}.Total",
    }
    request = message(document, add["messages"][0]["$ref"])
    assert request["payload"] == {"$ref": f"#/components/schemas/{__name__}.Sum"}
    assert errors(document, request["payload"], {"numbers": [1, 2]}) == []
    assert errors(document, request["payload"], {"numbers": "1, 2"})
    echo = operations["calc.echo"]
    assert message(document, echo["messages"][0]["$ref"])["contentType"] == "text/plain; charset=utf-8"
    echoed = message(document, echo["reply"]["messages"][0]["$ref"])
    assert echoed["contentType"] == "application/octet-stream"
    assert echoed["payload"] == {"type": "string", "contentEncoding": "base64"}
    forget = operations["calc.forget"]
    assert message(document, forget["messages"][0]["$ref"])["payload"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    assert [message(document, m["$ref"])["name"] for m in forget["reply"]["messages"]] == [
        "EmptyReply",
        "ServiceError",
    ]
    noted = message(document, operations["calc.noted"]["messages"][0]["$ref"])
    assert noted["headers"]["properties"]["ce-type"] == {"type": "string", "const": "shop.notes.v1.NoteAdded"}
    assert (
        operations["calc.publish.shop.notes.v1.NoteAdded"]["channel"] == operations["calc.noted"]["channel"]
    )
    replay = operations["calc.replay"]
    assert "ordered consumer" in replay["description"]
    assert resolve(document, replay["channel"]["$ref"])["address"] == "events.shop.*.v1.OrderPlaced"


def info(name: str, instance: str, **more: Any) -> dict[str, Any]:
    return {"type": "io.nats.micro.v1.info_response", "name": name, "id": instance, "version": "1.0.0",
            "metadata": None, "description": "", "endpoints": [], **more}  # fmt: skip


def test_discovery_answers_of_foreign_and_older_services(spec: Any) -> None:
    foreign = info(
        "go-echo",
        "a1",
        endpoints=[{"name": "echo", "subject": "svc.echo", "queue_group": "q", "metadata": None}],
    )
    older = info("old", "b1", metadata={"eventmicro.subscribes": "shop.orders.v1.OrderPlaced"})
    document = asyncapi_from_discovery(
        [foreign, dict(foreign, id="a2"), older], title="fleet", server="127.0.0.1:4222"
    )
    assert problems(spec, document) == []
    assert document["servers"]["nats"] == {"host": "127.0.0.1:4222", "protocol": "nats"}
    operations = document["operations"]
    assert sorted(operations) == [
        "go-echo.echo",
        "old.shop.orders.v1.OrderPlaced",
    ]  # two instances, one service
    echo = operations["go-echo.echo"]
    assert echo["bindings"]["nats"]["queue"] == "q"
    assert "headers" not in message(document, echo["messages"][0]["$ref"])  # no CloudEvents promised
    assert [message(document, m["$ref"])["name"] for m in echo["reply"]["messages"]][-1] == "ServiceError"
    old = operations["old.shop.orders.v1.OrderPlaced"]
    assert resolve(document, old["channel"]["$ref"])["address"] == "events.shop.orders.v1.OrderPlaced"
    placed = message(document, old["messages"][0]["$ref"])
    assert placed["payload"] == {"$ref": "#/components/schemas/shop.orders.v1.OrderPlaced"}  # installed here


def test_two_versions_side_by_side_get_ids_of_their_own(spec: Any) -> None:
    metadata = {"eventmicro.request": "builtins.str", "eventmicro.reply": "myapp.Order | None"}
    endpoint = {"name": "get", "subject": "orders.get", "queue_group": "orders", "metadata": metadata}
    document = asyncapi_from_discovery(
        [
            info("orders", "x", endpoints=[endpoint]),
            info("orders", "y", version="1.1.0", endpoints=[endpoint]),
        ]
    )
    assert problems(spec, document) == []
    assert sorted(document["operations"]) == ["orders-1.0.0.get", "orders-1.1.0.get"]
    assert document["info"]["version"] == "orders 1.0.0, orders 1.1.0"
    reply = [
        message(document, m["$ref"]) for m in document["operations"]["orders-1.0.0.get"]["reply"]["messages"]
    ]
    assert [r["name"] for r in reply] == ["myapp.Order", "EmptyReply", "ServiceError"]
    assert "myapp.Order" in reply[0]["payload"]["description"]  # not installed here: any JSON, named


def test_server_urls() -> None:
    svc = [calculator()]
    servers = asyncapi_for_services(svc, server="tls://a:1, nats://b:2,ws://[::1]:8080")["servers"]
    assert servers == {
        "nats": {"host": "a:1", "protocol": "nats", "description": "TLS"},
        "nats-2": {"host": "b:2", "protocol": "nats"},
        "nats-3": {"host": "[::1]:8080", "protocol": "ws"},
    }
    for bad in ("nats://host:port", " , "):
        with pytest.raises(ValueError, match="NATS URL"):
            asyncapi_for_services(svc, server=bad)


def test_documents_share_nothing() -> None:
    first = asyncapi_for_services([calculator()])
    first["components"]["messages"]["eventmicro.ServiceError"]["headers"]["required"].append("x")
    second = asyncapi_for_services([calculator()])
    assert second["components"]["messages"]["eventmicro.ServiceError"]["headers"]["required"] == [
        "Nats-Service-Error",
        "Nats-Service-Error-Code",
    ]


# --- eventmicro docs MODULE --------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["docs", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def test_docs_prints_the_document_of_a_module(
    spec: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "subscribers.orders", "subscribers.billing")
    assert code == 0
    document = json.loads(out)
    assert problems(spec, document) == []
    assert {"orders.place", "billing.get_payment"} <= set(document["operations"])
    target = tmp_path / "shop.asyncapi.yaml"
    options = ["-o", str(target), "--format", "yaml", "--title", "Shop", "--server", "nats://127.0.0.1:4222"]
    code, out, _ = run(capsys, "subscribers.orders", "subscribers.billing", *options)
    assert (code, out) == (0, "")
    loaded = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert "&id" not in target.read_text(encoding="utf-8")  # no YAML anchors
    assert loaded["info"]["title"] == "Shop"
    assert loaded["channels"] == document["channels"]
    assert problems(spec, loaded) == []


def test_docs_errors_are_one_line_with_an_exit_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "nosuch.module")
    assert code == 2
    assert err.strip() == "eventmicro: error: cannot import nosuch.module: No module named 'nosuch'"
    code, _, err = run(capsys, "subscribers.orders:nothing")
    assert code == 2
    assert "has no attribute 'nothing'" in err
    code, _, err = run(capsys)
    assert code == 2
    assert "give MODULE[:ATTR]" in err
    (tmp_path / "broken_services.py").write_text("raise RuntimeError('no config file')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(capsys, "broken_services")
    assert code == 2
    assert err.strip() == "eventmicro: error: cannot load broken_services: RuntimeError: no config file"
    sys.modules.pop("broken_services", None)
    code, _, err = run(capsys, "subscribers.orders", "--server", "nats://h:port")
    assert code == 2
    assert "--server" in err
    code, _, err = run(capsys, "subscribers.orders", "-o", str(tmp_path / "no" / "such" / "dir.json"))
    assert code == 2
    assert "cannot write" in err
    assert len(err.strip().splitlines()) == 1


def test_a_json_typed_endpoint_found_by_discovery_is_described_by_its_published_schema(spec: Any) -> None:
    svc = calculator()
    endpoints: list[dict[str, Any]] = [
        {"name": h.name, "subject": h.subject, "queue_group": h.queue, "metadata": _endpoint_metadata(h)}
        for h in svc.handlers
        if h.kind is HandlerKind.RPC
    ]
    add = next(e for e in endpoints if e["name"] == "add")
    assert "eventmicro.request_json_schema" in add["metadata"]  # what $SRV.INFO carries
    document = asyncapi_from_discovery([info("calc", "c1", endpoints=endpoints)])
    assert problems(spec, document) == []
    request = message(document, document["operations"]["calc.add"]["messages"][0]["$ref"])
    assert request["contentType"] == "application/json"
    assert "properties" in resolve(document, request["payload"]["$ref"])  # not "any JSON"
    assert errors(document, request["payload"], {"numbers": [1, 2]}) == []
    assert errors(document, request["payload"], {"numbers": "1, 2"}) != []
