"""What a newcomer touches first: the demo command and the public API."""

from __future__ import annotations

import subprocess
import sys

import eventmicro


def test_the_demo_runs_a_real_round_trip_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventmicro", "demo", "--orders", "4"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "calls answered      4/4" in out
    assert "events received     5/5 (binary 4, structured 1)" in out
    assert "error code 400" in out
    assert "embedded nats-server stopped" in out
    assert "Traceback" not in result.stderr


def test_help_shows_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventmicro", "server", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "eventmicro server --cluster 3" in result.stdout


def test_the_public_api_is_pinned_and_sorted() -> None:
    exported = eventmicro.__all__
    assert list(exported) == sorted(exported)
    assert set(exported) == {
        "AuthorizationError", "BadRequest", "Client", "Conflict", "Context", "DeadlineExceeded",
        "InternalError", "NotFound", "Service", "ServiceError", "ServiceUnavailable", "discover",
        "register_error", "Middleware", "logging_middleware", "timing_middleware",
        "ConfigurationError", "ConnectError", "ConnectOptions", "Connection",
        "ConnectionClosed", "ConnectionState", "ContentTypeMismatch", "EnvelopeError", "Event",
        "EventMicroError", "HeaderDecodeError", "InvalidAttribute", "Message", "MissingAttribute",
        "NatsCluster", "NatsServer", "NoResponders", "Payload", "PayloadDecodeError", "PayloadEncodeError",
        "PayloadError", "PayloadTooLarge", "ServerNotFound", "ServerStartError", "StructuredFormatError",
        "Subscription", "TLSOptions", "Timeout", "TypeRegistry", "UnexpectedType", "UnsupportedSpecVersion",
        "__version__", "connect", "decode_payload", "encode_payload", "event_type", "find_server_binary",
        "type_name_of",
        # durable events and the key-value store
        "BucketConfig", "BucketNotFound", "DeadLetter", "DeadLetters", "Entry", "InvalidKey",
        "JetStreamError", "NotStored", "RevisionConflict", "Store", "Stored", "Stream", "StreamConflict",
        "Watch",
    }  # fmt: skip
    for name in exported:
        assert hasattr(eventmicro, name)


def test_every_error_derives_from_the_one_root() -> None:
    errors = [getattr(eventmicro, n) for n in eventmicro.__all__ if n.endswith(("Error", "Timeout"))]
    errors += [eventmicro.NoResponders, eventmicro.PayloadTooLarge, eventmicro.ServerNotFound]
    errors += [eventmicro.InvalidAttribute, eventmicro.MissingAttribute, eventmicro.ConnectionClosed]
    for error in errors:
        assert issubclass(error, eventmicro.EventMicroError)
    assert issubclass(eventmicro.Timeout, TimeoutError)
    assert issubclass(eventmicro.EnvelopeError, ValueError)
    assert eventmicro.EnvelopeError.code == 400
    assert eventmicro.NoResponders.code == 503
