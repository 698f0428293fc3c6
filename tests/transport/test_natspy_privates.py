"""What eventmicro uses of nats-py's private parts is still there, shaped as it was checked.

``eventmicro/transport/natspy.py`` overrides private methods of nats-py's client and reads private
fields of its subscriptions. A nats-py release may change any of them; this test fails first,
so the dependency range in pyproject.toml is widened only after these pass.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription as NatsSubscription
from nats.protocol.parser import Parser

from eventmicro.transport import natspy as _natspy

# private method -> the parameter names eventmicro's override (or call) relies on
OVERRIDDEN = {
    "_request_new_style": ["self", "subject", "payload", "timeout", "headers"],
    "_init_request_sub": ["self"],
    "_process_msg": ["self", "sid", "subject", "reply", "data", "headers"],
    "_process_headers": ["self", "headers"],
    "_build_message": ["self", "sid", "subject", "reply", "data", "headers"],
    "_read_loop": ["self"],
    "_send_publish": ["self", "subject", "reply", "payload", "payload_size", "headers"],
    "_process_op_err": ["self", "e"],
    "_flush_pending": ["self", "force_flush"],
    "_send_command": ["self", "cmd", "priority"],
    "_send_unsubscribe": ["self", "sid"],
    "_remove_sub": ["self", "sid"],
    "_process_err": ["self", "err_msg"],
}
CLIENT_FIELDS = [
    "_pending",
    "_pending_data_size",
    "_subs",
    "_sid",
    "_resp_map",
    "_resp_sub_prefix",
    "_flush_queue",
    "_transport",
    "_server_info",
    "_reading_task",
    "_ps",
    "_error_cb",
]
SUBSCRIPTION_FIELDS = [
    "_pending_size",
    "_pending_queue",
    "_jsi",
    "_id",
    "_closed",
    "_conn",
    "_wait_for_msgs_task",
]


def test_the_installed_nats_py_is_the_one_checked() -> None:
    installed = tuple(int(part) for part in version("nats-py").split(".")[:2])
    checked = tuple(int(part) for part in _natspy.CHECKED_WITH.split(".")[:2])
    assert installed == checked, (
        "re-check eventmicro/transport/natspy.py against this nats-py, then update CHECKED_WITH"
    )


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_private_method_is_still_there_with_its_parameters(name: str) -> None:
    method = getattr(NatsClient, name, None)
    assert method is not None, f"nats-py no longer has Client.{name}"
    assert list(inspect.signature(method).parameters)[: len(OVERRIDDEN[name])] == OVERRIDDEN[name]


def test_the_subscription_can_still_stop_processing() -> None:
    assert list(inspect.signature(NatsSubscription._stop_processing).parameters) == ["self"]


def test_the_private_fields_read_are_still_set() -> None:
    client = NatsClient()
    for name in CLIENT_FIELDS:
        assert hasattr(client, name), f"nats-py's Client no longer sets {name}"
    subscription = NatsSubscription(client, 1, "subject", cb=None)
    for name in SUBSCRIPTION_FIELDS:
        assert hasattr(subscription, name), f"nats-py's Subscription no longer sets {name}"


def test_the_parser_still_hands_every_message_to_process_msg() -> None:
    source = inspect.getsource(Parser.parse)
    assert "self.nc._process_msg(" in source  # where _natspy.Client's guard sits


def test_the_reader_loop_still_swallows_what_the_override_handles() -> None:
    """`_natspy.Client._read_loop` relies on nats-py's loop ending (not raising) on an error it
    did not expect and on cancellation."""
    source = inspect.getsource(NatsClient._read_loop)
    assert "except asyncio.CancelledError:" in source
    assert "except Exception" in source


def test_the_parser_still_hands_an_err_line_to_process_err_before_dropping_it() -> None:
    """`_natspy.Client._process_err` reads the ``-ERR`` line from ``_ps.buf`` (nats-py passes it
    lower-cased, which would change the subject a `PermissionDenied` names)."""
    source = inspect.getsource(Parser.parse)
    call = source.index("await self.nc._process_err(")
    assert call < source.index("del self.buf[: err.end()]", call)
    assert _natspy.violation_of(b"""-ERR 'Permissions Violation for Publish to "A.B"'\r\n""", "") is not None


def test_a_permissions_violation_still_reaches_only_the_error_callback() -> None:
    """nats-py keeps the connection open on a permissions violation: `_process_err` returns after
    the error callback for it (the override does the same, with its own error)."""
    source = inspect.getsource(NatsClient._process_err)
    assert "PERMISSIONS_ERR in m" in source
