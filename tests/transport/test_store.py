"""The typed key-value store on JetStream KV: round trips, history, compare-and-set, watch, ctx.store."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from eventmicro import (
    Client,
    ConfigurationError,
    Conflict,
    Connection,
    ConnectionClosed,
    ConnectOptions,
    Context,
    NatsServer,
    PayloadDecodeError,
    PayloadTooLarge,
    Service,
)
from eventmicro._errors import BucketNotFound
from eventmicro.transport.kv import BucketConfig, Entry, Store
from eventmicro.wire.service_errors import InvalidKey, RevisionConflict
from schemas.shop.orders.v1 import orders_pb2 as orders


@dataclasses.dataclass
class Cart:
    owner: str
    items: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class AddItem:
    owner: str
    item: str
    expected_revision: int


@dataclasses.dataclass
class CartView:
    items: list[str]
    revision: int


def unique(prefix: str = "t") -> str:
    """A bucket or service name no other test on the shared server uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def open_connection(url: str) -> Connection:
    return await Connection(ConnectOptions.from_env(url, environ={}, connect_attempts=3)).open()


async def next_entries(updates: AsyncIterator[Entry[Cart]], count: int) -> list[Entry[Cart]]:
    """The next ``count`` entries of a watch, failing after 10 s."""
    seen: list[Entry[Cart]] = []
    async with asyncio.timeout(10):
        async for entry in updates:
            seen.append(entry)
            if len(seen) == count:
                break
    return seen


# --- values -------------------------------------------------------------------------------------


async def test_a_protobuf_value_round_trips_typed_and_is_stored_as_protobuf(conn: Connection) -> None:
    store = await Store.open(conn, unique(), orders.LineItem)
    item = orders.LineItem(sku="sku-1", quantity=2, unit_price_cents=250)

    revision = await store.put("sku-1", item)

    entry = await store.get("sku-1")
    assert entry is not None
    assert isinstance(entry.value, orders.LineItem)
    assert entry == Entry("sku-1", item, revision, entry.created, "PUT")
    assert entry.created.tzinfo is not None
    assert abs(datetime.now(UTC) - entry.created) < timedelta(seconds=30)
    assert await store.history("sku-1") == [entry]  # the same entry, read through a consumer
    raw = await Store.open(conn, store.bucket, bytes, create=False)  # the same bucket, read as bytes
    raw_entry = await raw.get("sku-1")
    assert raw_entry is not None
    assert raw_entry.value == item.SerializeToString()


async def test_dataclass_values_put_get_keys_history_delete_and_purge(conn: Connection) -> None:
    store = await Store.open(conn, unique(), Cart, config=BucketConfig(history=5))
    assert await store.keys() == []  # an empty bucket: no keys, not an error
    assert await store.get("u-1") is None
    assert await store.history("u-1") == []

    r1 = await store.put("u-1", Cart("ann"))
    r2 = await store.put("u-2", Cart("bob", ["tea"]))
    r3 = await store.put("u-1", Cart("ann", ["milk"]))

    assert r1 < r2 < r3
    assert await store.keys() == ["u-1", "u-2"]
    latest = await store.get("u-1")
    assert latest is not None
    assert (latest.value, latest.revision) == (Cart("ann", ["milk"]), r3)

    await store.delete("u-1")
    assert await store.get("u-1") is None
    assert await store.keys() == ["u-2"]
    history = await store.history("u-1")
    assert [(e.operation, e.value) for e in history] == [
        ("PUT", Cart("ann")),
        ("PUT", Cart("ann", ["milk"])),
        ("DEL", None),
    ]
    assert [e.revision for e in history[:2]] == [r1, r3]

    await store.purge("u-2")
    assert await store.keys() == []
    assert [e.operation for e in await store.history("u-2")] == ["PURGE"]  # older revisions gone


async def test_a_value_of_the_wrong_type_is_refused_before_anything_is_sent(conn: Connection) -> None:
    carts = await Store.open(conn, unique(), Cart)
    with pytest.raises(TypeError, match=r"stores Cart values; key 'u-1' was given a dict"):
        await carts.put("u-1", {"owner": "ann"})  # type: ignore[arg-type]
    items = await Store.open(conn, unique(), orders.LineItem)
    with pytest.raises(TypeError, match="stores LineItem values"):
        await items.put("sku-1", Cart("ann"))  # type: ignore[arg-type]
    assert await carts.keys() == []
    assert await items.keys() == []


async def test_a_stored_value_that_does_not_decode_names_its_key_and_revision(conn: Connection) -> None:
    bucket = unique()
    raw = await Store.open(conn, bucket, bytes)
    revision = await raw.put("u-1", b"\xffnot json")
    carts = await Store.open(conn, bucket, Cart, create=False)

    with pytest.raises(PayloadDecodeError, match=rf"key 'u-1' revision {revision} in bucket '{bucket}'"):
        await carts.get("u-1")


async def test_an_oversize_value_is_refused_and_nothing_is_sent(conn: Connection) -> None:
    store = await Store.open(conn, unique(), bytes)
    limit = conn.max_payload

    with pytest.raises(PayloadTooLarge) as too_big:
        await store.put("blob", b"x" * (limit + 1))
    assert (too_big.value.size, too_big.value.limit) == (limit + 1, limit)
    with pytest.raises(PayloadTooLarge):  # the body fits alone; with the create-only header it does not
        await store.put("blob", b"x" * limit, expected_revision=0)

    assert conn.is_connected  # the server did not close the connection
    assert await store.keys() == []
    assert await store.put("blob", b"small") > 0


async def test_values_expire_after_the_bucket_ttl(conn: Connection) -> None:
    store = await Store.open(conn, unique(), str, config=BucketConfig(ttl=1.0, storage="memory"))
    await store.put("greeting", "hello")
    entry = await store.get("greeting")
    assert entry is not None
    assert entry.value == "hello"
    async with asyncio.timeout(10):  # the server removes it after about a second
        while await store.get("greeting") is not None:  # noqa: ASYNC110 - expiry sends no event
            await asyncio.sleep(0.05)
    assert await store.keys() == []


# --- compare-and-set ----------------------------------------------------------------------------


async def test_create_only_and_compare_and_set_raise_revision_conflict(conn: Connection) -> None:
    store = await Store.open(conn, unique(), Cart)
    first = await store.put("u-1", Cart("ann"), expected_revision=0)

    with pytest.raises(RevisionConflict) as created_twice:
        await store.put("u-1", Cart("eve"), expected_revision=0)
    conflict = created_twice.value
    assert isinstance(conflict, Conflict)
    assert conflict.instance_code == 409
    assert (conflict.bucket, conflict.key, conflict.expected, conflict.current) == (
        store.bucket,
        "u-1",
        0,
        first,
    )
    assert conflict.detail == (
        f"revision conflict on key 'u-1' in bucket '{store.bucket}': "
        f"expected it not to exist (create-only), but it exists at revision {first}"
    )

    second = await store.put("u-1", Cart("ann", ["tea"]), expected_revision=first)
    with pytest.raises(RevisionConflict) as stale:
        await store.put("u-1", Cart("eve"), expected_revision=first)
    assert (stale.value.expected, stale.value.current) == (first, second)
    assert stale.value.detail.endswith(f"expected revision {first}, but its current revision is {second}")
    kept = await store.get("u-1")
    assert kept is not None
    assert kept.value == Cart("ann", ["tea"])  # the losing writes changed nothing

    with pytest.raises(RevisionConflict):
        await store.delete("u-1", expected_revision=first)
    await store.delete("u-1", expected_revision=second)
    third = await store.put("u-1", Cart("new"), expected_revision=0)  # create-only over a deleted key
    assert third > second
    with pytest.raises(RevisionConflict, match="but the key does not exist"):
        await store.put("nobody", Cart("x"), expected_revision=5)
    with pytest.raises(ValueError, match="at least 0"):
        await store.put("u-1", Cart("x"), expected_revision=-1)


# --- watch --------------------------------------------------------------------------------------


async def test_watch_yields_current_values_then_puts_and_deletes_in_order(conn: Connection) -> None:
    store = await Store.open(conn, unique(), Cart)
    await store.put("u-0", Cart("before"))

    async with store.watch() as updates:
        r1 = await store.put("u-1", Cart("ann"))
        r2 = await store.put("u-2", Cart("bob"))
        r3 = await store.put("u-1", Cart("ann", ["tea"]))
        await store.delete("u-2")
        seen = await next_entries(updates, 5)

    assert [(e.key, e.operation, e.value) for e in seen] == [
        ("u-0", "PUT", Cart("before")),
        ("u-1", "PUT", Cart("ann")),
        ("u-2", "PUT", Cart("bob")),
        ("u-1", "PUT", Cart("ann", ["tea"])),
        ("u-2", "DEL", None),
    ]
    assert [e.revision for e in seen[1:4]] == [r1, r2, r3]
    assert seen[4].revision > r3
    assert [e async for e in updates] == []  # left the block: the watch is stopped


async def test_a_filtered_watch_with_history_sees_only_its_keys(conn: Connection) -> None:
    store = await Store.open(conn, unique(), Cart, config=BucketConfig(history=10))
    await store.put("eu.ann", Cart("ann"))
    await store.put("us.bob", Cart("bob"))
    await store.put("eu.ann", Cart("ann", ["tea"]))

    async with store.watch("eu.*", include_history=True) as updates:
        await store.put("us.bob", Cart("bob", ["jam"]))
        await store.put("eu.cid", Cart("cid"))
        seen = await next_entries(updates, 3)

    assert [(e.key, e.value) for e in seen] == [
        ("eu.ann", Cart("ann")),
        ("eu.ann", Cart("ann", ["tea"])),
        ("eu.cid", Cart("cid")),
    ]
    with pytest.raises(InvalidKey):
        store.watch("eu..x")


async def test_a_watch_ends_with_connection_closed_when_its_connection_closes(
    nats_server: NatsServer, conn: Connection
) -> None:
    bucket = unique()
    await Store.open(conn, bucket, Cart)
    other = await open_connection(nats_server.url)
    store = await Store.open(other, bucket, Cart, create=False)

    async with store.watch() as updates:
        waiting = asyncio.ensure_future(anext(updates))
        await other.close()
        with pytest.raises(ConnectionClosed, match=f"watch on bucket '{bucket}' ended"):
            await asyncio.wait_for(waiting, 10)


# --- names --------------------------------------------------------------------------------------


async def test_invalid_keys_and_bucket_names_are_rejected_before_sending(conn: Connection) -> None:
    for name in ["bad.name", "", "sp ace", "$KV"]:
        with pytest.raises(ConfigurationError, match=re.escape(f"bucket name '{name}'")):
            await Store.open(conn, name, Cart)
    with pytest.raises(ConfigurationError, match="cannot hold int values"):
        await Store.open(conn, unique(), int)
    with pytest.raises(ConfigurationError, match="history must be 1 to 64"):
        BucketConfig(history=65)
    missing = unique()
    with pytest.raises(BucketNotFound, match=f"bucket '{missing}' does not exist") as not_found:
        await Store.open(conn, missing, Cart, create=False)
    assert (not_found.value.bucket, not_found.value.code) == (missing, 404)

    store = await Store.open(conn, unique(), Cart)
    for key in ["", ".a", "a.", "a..b", "a b", "ä", "a*", "a.>"]:
        with pytest.raises(InvalidKey) as bad:
            await store.put(key, Cart("x"))
        assert isinstance(bad.value, ValueError)
        assert bad.value.key == key
        assert bad.value.instance_code == 400
        with pytest.raises(InvalidKey):
            await store.get(key)
        with pytest.raises(InvalidKey):
            await store.delete(key)
    assert await store.keys() == []
    assert await store.put("a-b_c/d=e.f", Cart("ok")) > 0  # every character ADR-8 allows


# --- handlers -----------------------------------------------------------------------------------


async def test_a_handler_uses_ctx_store_and_a_revision_conflict_reaches_the_caller_as_409(
    conn: Connection,
) -> None:
    bucket = unique()
    svc = Service(unique("carts"), version="1.0.0")
    opened: list[Store[Cart]] = []

    @svc.rpc
    async def add_item(req: AddItem, ctx: Context) -> CartView:
        carts = await ctx.store(bucket, Cart)
        opened.append(carts)
        entry = await carts.get(req.owner)
        cart = entry.value if entry is not None and entry.value is not None else Cart(req.owner)
        cart.items.append(req.item)
        revision = await carts.put(req.owner, cart, expected_revision=req.expected_revision)
        return CartView(cart.items, revision)

    async with svc.serving(conn):
        client = Client(conn)
        endpoint = f"{svc.name}.add_item"
        first = await client.call(endpoint, AddItem("ann", "tea", 0), returns=CartView, timeout=5)
        second = await client.call(endpoint, AddItem("ann", "milk", first.revision), returns=CartView)
        with pytest.raises(Conflict) as stale:
            await client.call(endpoint, AddItem("ann", "jam", first.revision), returns=CartView)

    assert (first.items, second.items) == (["tea"], ["tea", "milk"])
    assert stale.value.instance_code == 409
    assert stale.value.detail == (
        f"revision conflict on key 'ann' in bucket '{bucket}': "
        f"expected revision {first.revision}, but its current revision is {second.revision}"
    )
    assert len(opened) == 3
    assert opened[0] is opened[1] is opened[2]  # opened once for the service instance
    store = await Store.open(conn, bucket, Cart, create=False)  # ctx.store created the bucket
    entry = await store.get("ann")
    assert entry is not None
    assert entry.value == Cart("ann", ["tea", "milk"])
