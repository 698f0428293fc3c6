"""``eventmicro demo``: what it counts is what its own run did, on a server with earlier runs."""

from __future__ import annotations

from eventmicro import Connection, ConnectOptions, NatsServer
from eventmicro.cli.demo import Run, _collect, _snapshot
from eventmicro.transport import jetstream
from eventmicro.wire.names import dead_letter_subject
from subscribers import orders as orders_service


async def test_the_demo_counts_only_the_dead_letters_of_its_own_run(fresh_nats_server: NatsServer) -> None:
    async with Connection(ConnectOptions.from_env(fresh_nats_server.url, environ={})) as conn:
        async with orders_service.svc.serving(conn):  # it declares the dead-letter stream
            # an earlier run left a dead letter behind
            await jetstream.publish(
                conn, dead_letter_subject("orders", "on_stock_rejected"), b"", {}, msg_id="earlier-run"
            )
        before = await _snapshot(conn)
        run = Run()
        await _collect(conn, run, before)
        assert run.dead_letters == 0
