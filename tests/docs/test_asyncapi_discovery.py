"""AsyncAPI documents of the running reference shop, built from $SRV.INFO: valid AsyncAPI 3.0.0
(the official JSON schema, and the official JS parser when installed), the same as the document
built from the Service objects, and what ``eventmicro docs --discover`` prints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio

from eventmicro import Connection, ConnectOptions, NatsServer, Service, discover
from eventmicro.docs.asyncapi import asyncapi_for_services, asyncapi_from_discovery
from subscribers import audit, billing, inventory, notifications, orders

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "interop" / "js"
SPEC = JS / "node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
NODE = shutil.which("node")
SHOP: list[Service] = [m.svc for m in (orders, inventory, billing, notifications, audit)]
NAMES = {s.name for s in SHOP}
PARSE = """
import { Parser } from '@asyncapi/parser';
let text = '';
for await (const chunk of process.stdin) text += chunk;
const { document, diagnostics } = await new Parser().parse(text);
const replies = (op) => [op.id(), op.reply() ? op.reply().messages().length : 0];
const operations = document ? document.operations().all().map(replies) : [];
const found = diagnostics.map((d) => ({ severity: d.severity, code: d.code, message: d.message }));
console.log(JSON.stringify({ parsed: Boolean(document), operations, diagnostics: found }));
"""


@pytest.fixture(scope="module")
def spec() -> Any:
    if not SPEC.is_file():
        message = "the AsyncAPI schema comes from npm: run `npm ci` in tests/interop/js (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    schema = json.loads(SPEC.read_text(encoding="utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)


def invalid(spec: Any, document: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message[:200]}" for e in spec.iter_errors(document)]


@pytest_asyncio.fixture
async def shop(fresh_nats_server: NatsServer) -> AsyncIterator[Connection]:
    """The five shop services on a server of their own, and notifications twice (two instances)."""
    options = ConnectOptions.from_env(fresh_nats_server.url, environ={})
    async with (
        Connection(options) as conn,
        Connection(options) as other,
        contextlib.AsyncExitStack() as stack,
    ):
        for service in SHOP:
            await stack.enter_async_context(service.serving(conn))
        await stack.enter_async_context(notifications.svc.serving(other))
        yield conn


async def shop_answers(conn: Connection) -> list[dict[str, Any]]:
    """Every $SRV.INFO answer, once each instance of the shop has answered."""
    async with asyncio.timeout(20):
        while True:
            answers = await discover(conn, "INFO", window=0.3)
            if {a["name"] for a in answers} >= NAMES and len(answers) >= len(NAMES) + 1:
                return answers


def without_descriptions(operations: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: v for k, v in op.items() if k != "description"} for name, op in operations.items()}


async def test_the_running_shop_documents_itself_as_its_code_does(
    spec: Any, shop: Connection, fresh_nats_server: NatsServer
) -> None:
    answers = await shop_answers(shop)
    discovered = asyncapi_from_discovery(answers, title="shop", server=fresh_nats_server.url)
    assert invalid(spec, discovered) == []
    from_code = asyncapi_for_services(SHOP, title="shop", server=fresh_nats_server.url)
    assert invalid(spec, from_code) == []
    # one model, one shape: only the durable handlers' retry details are not in $SRV.INFO
    assert discovered["servers"] == from_code["servers"]
    assert discovered["channels"] == from_code["channels"]
    assert discovered["components"] == from_code["components"]
    assert without_descriptions(discovered["operations"]) == without_descriptions(from_code["operations"])
    assert {o["description"] for o in discovered["operations"].values()} >= {
        "Core NATS without a queue group (broadcast): every instance gets every event (at most once)."
    }
    place = discovered["operations"]["orders.place"]
    assert [m["$ref"].rpartition("/")[2] for m in place["reply"]["messages"]] == [
        "orders.place.reply",
        "eventmicro.ServiceError",
    ]
    assert discovered["components"]["messages"]["orders.place.reply"]["payload"] == {
        "$ref": "#/components/schemas/shop.orders.v1.OrderAccepted"
    }
    headers = discovered["components"]["messages"]["shop.orders.v1.OrderPlaced"]["headers"]
    assert headers["required"] == ["ce-specversion", "ce-id", "ce-source", "ce-type"]


async def test_srv_info_says_how_each_event_handler_listens(shop: Connection) -> None:
    answers = {a["name"]: a for a in await shop_answers(shop)}
    metadata = answers["inventory"]["metadata"]
    assert json.loads(metadata["eventmicro.subscription.on_order_placed"]) == {
        "subject": "events.shop.orders.v1.OrderPlaced",
        "queue_group": None,
        "types": ["shop.orders.v1.OrderPlaced"],
        "delivery": "durable",
        "consumer": "inventory-on_order_placed",
    }
    assert "type.googleapis.com/shop.inventory.v1.StockReserved" in metadata[
        "eventmicro.event_schemas"
    ].split(",")
    assert metadata["eventmicro.subscribes"].split(",") == sorted(
        metadata["eventmicro.subscribes"].split(",")
    )
    broadcast = json.loads(answers["notifications"]["metadata"]["eventmicro.subscription.on_confirmed"])
    assert (broadcast["delivery"], broadcast["queue_group"]) == ("core", None)
    wildcard = json.loads(answers["audit"]["metadata"]["eventmicro.subscription.record"])
    assert wildcard["subject"] == "events.shop.>"
    assert len(wildcard["types"]) == 8
    assert all(isinstance(v, str) for a in answers.values() for v in a["metadata"].values())  # ADR-32


@pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "@asyncapi" / "parser").is_dir(),
    reason="needs node and `npm ci` in tests/interop/js (make test does both)",
)
async def test_the_official_asyncapi_parser_reads_the_discovered_document(shop: Connection) -> None:
    document = asyncapi_from_discovery(await shop_answers(shop), title="shop")
    process = await asyncio.create_subprocess_exec(
        str(NODE), "--input-type=module", "-e", PARSE,
        cwd=JS, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate(json.dumps(document).encode())
    assert process.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["parsed"], result["diagnostics"]
    assert [d for d in result["diagnostics"] if d["severity"] <= 1] == []  # no errors, no warnings
    replies = dict(result["operations"])
    assert replies["orders.place"] == 2  # the reply and the error reply
    assert replies["notifications.recent"] == 2
    assert replies["audit.record"] == 0


async def docs(*argv: str) -> tuple[int, str, str]:
    """``eventmicro docs ...`` as its own process (the shop serves in this test's event loop)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTMICRO_NATS", "NATS_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventmicro", "docs", *argv,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert b"Traceback" not in out + err
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_docs_discover(spec: Any, shop: Connection, fresh_nats_server: NatsServer) -> None:
    url = fresh_nats_server.url
    await shop_answers(shop)
    code, out, err = await docs("--discover", "--url", url)
    assert code == 0, err
    document = json.loads(out)
    assert invalid(spec, document) == []
    assert {name.partition(".")[0] for name in document["operations"]} == NAMES
    assert document["servers"]["nats"]["host"] == url.removeprefix("nats://")
    code, out, err = await docs("--discover", "orders", "billing", "--url", url, "--title", "Two")
    assert code == 0, err
    document = json.loads(out)
    assert {name.partition(".")[0] for name in document["operations"]} == {"orders", "billing"}
    assert document["info"]["title"] == "Two"
    assert document["components"]["messages"]["billing.get_payment.reply"]["payload"] == {
        "$ref": "#/components/schemas/shop.billing.v1.Payment"
    }
    code, out, err = await docs("--discover", "nosuch", "--url", url, "--window", "0.2")
    assert (code, out) == (3, "")
    assert err.strip() == "eventmicro: error: no service named 'nosuch' answers"
