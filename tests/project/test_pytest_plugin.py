"""The pytest plugin, as a user's own test suite gets it: installed, not imported."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from eventmicro import pytest_plugin

USER_TESTS = """
import asyncio
import pytest

from eventmicro import Connection, Event, Message, NatsServer
from eventmicro import cloudevents_nats as binding


@pytest.mark.asyncio
async def test_round_trip(nats_connection: Connection) -> None:
    got = asyncio.get_running_loop().create_future()

    async def handler(msg: Message) -> None:
        got.set_result(binding.from_nats(msg, None))

    await nats_connection.subscribe("user.events", handler)
    wire = binding.to_binary(Event.create(type="com.user.ping", source="/user", data=b"hi"), None)
    await nats_connection.publish("user.events", wire.data, headers=wire.headers)
    event = await asyncio.wait_for(got, 10)
    assert event.get_data() == b"hi"


def test_session_server_is_shared(nats_server: NatsServer, nats_url: str) -> None:
    assert nats_server.is_running
    assert nats_url == nats_server.url


def test_fresh_server_can_be_killed(fresh_nats_server: NatsServer, nats_server: NatsServer) -> None:
    assert fresh_nats_server.port != nats_server.port
    fresh_nats_server.kill()
    assert not fresh_nats_server.is_running
    fresh_nats_server.start()
    assert fresh_nats_server.is_running
"""


def test_a_user_suite_gets_the_fixtures_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


def test_the_plugin_lists_its_fixtures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    output = result.stdout.str()
    for name in ("nats_server", "fresh_nats_server", "nats_cluster", "nats_url", "nats_connection"):
        assert name in output


def test_the_plugin_docstring_example_runs_in_a_user_suite(pytester: pytest.Pytester) -> None:
    """The example users copy (capture / wait_for, TestContext) passes as written, with the
    pytest-asyncio settings the docstring names."""
    doc = pytest_plugin.__doc__ or ""
    example = textwrap.dedent(doc.split("A runnable example", 1)[1].split("::\n", 1)[1])
    pytester.makepyfile(test_example=example)
    root = Path(__file__).resolve().parents[2]  # the reference shop's schemas
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        f"pythonpath = {root}\nfilterwarnings = error\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)


def test_the_helpers_are_importable_from_the_plugin() -> None:
    for name in ("capture", "Captured", "TestContext", "call_handler"):
        assert name in pytest_plugin.__all__
        assert callable(getattr(pytest_plugin, name))
