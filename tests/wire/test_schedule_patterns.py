"""The schedule patterns eventmicro accepts and the Tick read from a produced message (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventmicro.wire.schedules import check_pattern, tick_of

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "every", "header"),
    [
        ("@every 1s", None, "@every 1s"),
        ("@every   1h30m", None, "@every 1h30m"),
        ("@hourly", None, "@hourly"),
        ("0 */5 * * * mon-fri", None, "0 */5 * * * mon-fri"),
        (None, 90, "@every 90s"),
        (None, timedelta(minutes=2), "@every 120s"),
    ],
)
def test_accepted_patterns_become_the_header_the_server_reads(
    pattern: str | None, every: float | timedelta | None, header: str
) -> None:
    assert check_pattern(pattern, every) == header


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"Nats-Schedule-Next": "purge"},
        {"Nats-Schedule-Next": "\x00" * 300},
        {"Nats-Schedule-Next": "2026-01-01T00:00:01"},  # no zone: not trusted
    ],
)
def test_a_tick_from_odd_headers_has_no_next_time_and_does_not_raise(headers: dict[str, str] | None) -> None:
    tick = tick_of(7, AT, "@every 1s", headers)
    assert (tick.id, tick.at, tick.next) == ("7", AT, None)


def test_a_tick_carries_the_servers_next_time() -> None:
    tick = tick_of(8, AT, "@every 1s", {"Nats-Schedule-Next": "2026-01-01T00:00:01Z"})
    assert tick.next == AT + timedelta(seconds=1)
