"""``eventmicro call / publish / tail / services`` against a live service, through the real entry point.

The service runs in a thread with its own event loop (``main`` uses ``asyncio.run``, so the
tests are synchronous); ``tail`` runs as its own process, as a user runs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from eventmicro import Connection, ConnectOptions, Event, NatsServer, NotFound, Service, Stream
from eventmicro import cloudevents_nats as binding
from eventmicro.cli.main import main
from eventmicro.transport import jetstream
from schemas.shop.orders.v1 import orders_pb2 as orders

ROOT = Path(__file__).resolve().parents[2]
NO_SERVER = "nats://127.0.0.1:1"


@dataclasses.dataclass
class Note:
    text: str
    stars: int = 0


def shop_service(name: str) -> Service:
    svc = Service(
        name, version="1.2.3", description="orders for the CLI tests", publishes=[orders.OrderPlaced]
    )

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        total = sum(item.quantity * item.unit_price_cents for item in req.items)
        return orders.OrderAccepted(order_id=f"o-{req.customer_id}", total_cents=total)

    @svc.rpc
    async def get(req: orders.GetOrder) -> orders.Order:
        raise NotFound(f"no order {req.order_id}")

    @svc.rpc
    async def note(req: Note) -> Note:
        return Note(text=req.text.upper(), stars=req.stars + 1)

    @svc.rpc
    async def slow(req: orders.GetOrder) -> orders.Order:
        await asyncio.sleep(5)
        return orders.Order(order_id=req.order_id)

    @svc.subscribe
    async def cancelled(event: orders.OrderCancelled) -> None:
        return None

    return svc


class ServiceThread:
    """Serves a `Service` on its own connection and event loop, in a thread, inside ``with``."""

    def __init__(self, service: Service, url: str) -> None:
        self.service = service
        self.url = url
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"service-{service.name}", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        options = ConnectOptions.from_env(self.url, environ={})
        async with Connection(options) as conn, self.service.serving(conn, drain_timeout=5):
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        assert self._ready.wait(15), "the service did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def shop(nats_server: NatsServer) -> Iterator[str]:
    """The name of a running shop service (unique: the session server is shared)."""
    name = f"clishop{uuid.uuid4().hex[:8]}"
    with ServiceThread(shop_service(name), nats_server.url):
        yield name


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


# --- call ---------------------------------------------------------------------------------


def test_call_builds_the_protobuf_request_from_json_and_prints_the_reply_as_json(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request = {"customerId": "c-1", "items": [{"sku": "apple", "quantity": 3, "unitPriceCents": "250"}]}
    code, out, _ = run(capsys, "call", f"{shop}.place", json.dumps(request), "--url", nats_server.url)
    assert code == 0
    assert json.loads(out) == {"orderId": "o-c-1", "totalCents": "750"}
    assert out.startswith("{\n  ")  # indented


def test_call_sends_json_to_an_endpoint_whose_types_are_not_protobuf(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "call", f"{shop}.note", '{"text": "hi", "stars": 1}', "--url", nats_server.url)
    assert code == 0
    assert json.loads(out) == {"text": "HI", "stars": 2}


def test_a_service_error_is_one_clear_line_and_exit_code_1(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "call", f"{shop}.get", '{"orderId": "o-9"}', "--url", nats_server.url)
    assert code == 1
    assert out == ""
    assert err.strip() == "error 404 NotFound: no order o-9"


def test_a_request_the_service_rejects_is_reported_as_its_400(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "call", f"{shop}.note", '{"stars": 1}', "--url", nats_server.url)
    assert code == 1
    assert err.startswith("error 400 BadRequest: the request is not a valid")
    assert "text" in err  # the missing field is named


def test_unknown_endpoint_and_unknown_service_exit_3_and_say_so(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "call", f"{shop}.nope", "{}", "--url", nats_server.url)
    assert code == 3
    assert f"service '{shop}' has no endpoint 'nope' (its endpoints: get, note, place, slow)" in err

    code, _, err = run(capsys, "call", "nosuchservice.place", "{}", "--url", nats_server.url)
    assert code == 3
    assert "no service named 'nosuchservice' answers" in err


@pytest.mark.parametrize(
    ("request_json", "message"),
    [
        ('{"customerId": "c-1",', "the request is not valid JSON: Expecting"),
        ('{"customerId": "c-1", "bogus": 1}', "'bogus' is not a field of shop.orders.v1.PlaceOrder"),
        ('{"items": [{"quantity": "many"}]}', "items.quantity: a value of the wrong type or out of range"),
        ("[1, 2]", "the request for shop.orders.v1.PlaceOrder must be a JSON object"),
    ],
)
def test_bad_json_is_a_clear_message_naming_the_problem(
    nats_server: NatsServer,
    shop: str,
    capsys: pytest.CaptureFixture[str],
    request_json: str,
    message: str,
) -> None:
    code, out, err = run(capsys, "call", f"{shop}.place", request_json, "--url", nats_server.url)
    assert code == 2
    assert out == ""
    assert err.startswith("eventmicro: error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_the_request_can_come_from_a_file_and_schemas_from_named_packages(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    request = tmp_path / "request.json"
    request.write_text('{"customerId": "c-2"}')
    argv = ["call", f"{shop}.place", f"@{request}", "--url", nats_server.url]
    code, out, _ = run(capsys, *argv, "--schemas", "schemas.shop.orders")
    assert code == 0
    assert json.loads(out) == {"orderId": "o-c-2"}

    code, _, err = run(capsys, *argv, "--schemas", "nosuchpackage")
    assert code == 2
    assert "cannot import schema package 'nosuchpackage'" in err


def test_a_call_that_outlives_its_timeout_exits_1(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "call", f"{shop}.slow", '{"orderId": "o-1"}', "--timeout", "0.3", "--url", nats_server.url
    )
    assert code == 1
    # the client's deadline and the service's (it got the budget) race: either one is reported
    assert f"{shop}.slow did not answer within 0.3s" in err or "error 504 DeadlineExceeded" in err


@pytest.mark.parametrize("argv", [["call", "orders.place", "{}"], ["tail", "--count", "1"]])
def test_no_server_is_a_clear_error_without_a_traceback(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, *argv, "--url", NO_SERVER)
    assert code == 2
    assert f"cannot connect to NATS at {NO_SERVER}" in err


# --- publish and tail ---------------------------------------------------------------------


def start_tail(url: str, *argv: str) -> subprocess.Popen[str]:
    """``eventmicro tail`` in its own process, returned once it listens."""
    command = [sys.executable, "-m", "eventmicro", "tail", *argv, "--url", url]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    line = process.stderr.readline()  # "listening on ..." once the server holds the subscription
    if not line.startswith("listening on"):
        process.kill()
        _, rest = process.communicate(timeout=10)
        pytest.fail(f"tail did not start: {line}{rest}")
    return process


async def publish_foreign(url: str, prefix: str) -> None:
    """A structured-mode event and a message that is no CloudEvent, as other clients send them."""
    async with Connection(ConnectOptions.from_env(url, environ={})) as conn:
        event = Event.create(
            type="com.example.structured", source="/js", data={"n": 1}, datacontenttype="application/json"
        )
        wire = binding.to_structured(event, None)
        await conn.publish(f"{prefix}.structured", wire.data, headers=wire.headers)
        await conn.publish(f"{prefix}.plain", b"just bytes")


def test_publish_and_tail_show_events_in_either_mode_and_other_messages(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"clitail{uuid.uuid4().hex[:8]}"
    url = nats_server.url
    with start_tail(url, f"{prefix}.>", "--count", "4", "--json") as tail:
        code, out, _ = run(
            capsys, "publish", "shop.orders.v1.OrderCancelled", '{"orderId": "o-1", "reason": "test"}',
            "--subject", f"{prefix}.proto", "--source", "/cli-test", "--url", url,
        )  # fmt: skip
        assert code == 0
        assert out.startswith("published ")
        assert f"(shop.orders.v1.OrderCancelled) on {prefix}.proto" in out
        event_id = out.split()[1]
        code, out, _ = run(
            capsys,
            "publish",
            "com.example.note",
            '{"text": "hi"}',
            "--subject",
            f"{prefix}.json",
            "--url",
            url,
        )
        assert code == 0
        asyncio.run(publish_foreign(url, prefix))
        printed, _ = tail.communicate(timeout=20)
    assert tail.returncode == 0
    lines = [json.loads(line) for line in printed.splitlines()]
    by_subject = {str(line["nats_subject"]).rsplit(".", 1)[1]: line for line in lines}
    proto, note, structured, plain = (by_subject[k] for k in ("proto", "json", "structured", "plain"))
    assert proto["nats_subject"] == f"{prefix}.proto"
    assert proto["id"] == event_id
    assert (proto["type"], proto["source"], proto["mode"]) == (
        "shop.orders.v1.OrderCancelled",
        "/cli-test",
        "binary",
    )
    assert proto["datacontenttype"] == "application/protobuf"
    assert proto["data"] == {"orderId": "o-1", "reason": "test"}  # decoded: the type is installed
    assert (note["type"], note["datacontenttype"], note["data"]) == (
        "com.example.note",
        "application/json",
        {"text": "hi"},
    )
    assert (structured["mode"], structured["type"], structured["data"]) == (
        "structured",
        "com.example.structured",
        {"n": 1},
    )
    assert plain["cloudevent"] is False
    assert plain["data"] == "just bytes"


def test_tail_is_pretty_by_default(nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    subject = f"clitail{uuid.uuid4().hex[:8]}.placed"
    with start_tail(nats_server.url, subject, "--count", "1") as tail:
        code, _, _ = run(
            capsys, "publish", "shop.orders.v1.OrderPlaced", '{"orderId": "o-7", "totalCents": 12}',
            "--subject", subject, "--url", nats_server.url,
        )  # fmt: skip
        assert code == 0
        printed, _ = tail.communicate(timeout=20)
    head, *data = printed.splitlines()
    assert "  shop.orders.v1.OrderPlaced  source=/eventmicro/cli  id=" in head
    assert head.endswith(f"on {subject} (binary)")
    assert json.loads("\n".join(data)) == {"orderId": "o-7", "totalCents": "12"}


def test_durable_publish_prints_the_stream_and_sequence(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = f"CLIPUB{uuid.uuid4().hex[:8]}"

    async def declare() -> None:
        async with Connection(ConnectOptions.from_env(nats_server.url, environ={})) as conn:
            await jetstream.ensure_stream(conn, Stream(stream, [f"{stream}.>"]))

    asyncio.run(declare())
    argv = [
        "publish",
        "shop.orders.v1.OrderPlaced",
        '{"orderId": "o-1"}',
        "--durable",
        "--url",
        nats_server.url,
    ]
    code, out, _ = run(capsys, *argv, "--subject", f"{stream}.placed")
    assert code == 0
    assert out.strip().endswith(f"on {stream}.placed: stored in stream {stream} seq 1")

    code, _, err = run(capsys, *argv, "--subject", f"nostream{stream}.placed", "--timeout", "0.5")
    assert code == 1
    assert "not stored: no stream stores this subject" in err


# --- services -----------------------------------------------------------------------------


def test_services_ls_info_and_stats(
    nats_server: NatsServer, shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = nats_server.url
    assert run(capsys, "call", f"{shop}.place", '{"customerId": "c"}', "--url", url)[0] == 0
    assert run(capsys, "call", f"{shop}.get", '{"orderId": "x"}', "--url", url)[0] == 1

    code, out, _ = run(capsys, "services", "ls", shop, "--url", url)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "VERSION", "INSTANCES", "DESCRIPTION"]
    assert row.split() == [shop, "1.2.3", "1", "orders", "for", "the", "CLI", "tests"]

    code, out, _ = run(capsys, "services", "--json", "--url", url)  # every service, ls by default
    assert code == 0
    assert {"name": shop, "version": "1.2.3", "instances": 1, "description": "orders for the CLI tests"} in [
        json.loads(line) for line in out.splitlines()
    ]

    code, out, _ = run(capsys, "services", "info", shop, "--url", url)
    assert code == 0
    assert out.splitlines()[0] == f"{shop} 1.2.3  (1 instance(s))  orders for the CLI tests"
    place = next(line.split() for line in out.splitlines() if line.split()[:1] == ["place"])
    assert place == [
        "place",
        f"{shop}.place",
        shop,
        "shop.orders.v1.PlaceOrder",
        "shop.orders.v1.OrderAccepted",
    ]
    assert "  subscribes: shop.orders.v1.OrderCancelled" in out
    assert "  publishes: shop.orders.v1.OrderPlaced" in out

    code, out, _ = run(capsys, "services", "stats", shop, "--url", url)
    assert code == 0
    rows = {line.split()[2]: line.split() for line in out.splitlines()[1:]}
    assert int(rows["place"][3]) >= 1  # earlier tests called it too: the service is shared
    assert rows["place"][4] == "0"
    assert rows["place"][5].endswith(("µs", "ms"))  # the average processing time
    assert int(rows["get"][3]) >= 1
    assert rows["get"][4] == rows["get"][3]  # every get fails
    assert rows["get"][6:] == ["404:no", "order", "x"]
    assert "cancelled" in rows  # the event handler's counters

    code, _, err = run(capsys, "services", "info", "nosuchservice", "--url", url)
    assert code == 3
    assert "no service named 'nosuchservice' answers" in err
