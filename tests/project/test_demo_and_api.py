"""What a newcomer touches first: the demo command and the public API."""

from __future__ import annotations

import subprocess
import sys

import eventmicro


def eventmicro_command(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m eventmicro ARGS``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "eventmicro", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_demo_runs_the_reference_shop_and_every_order_settles() -> None:
    result = eventmicro_command("demo", "--orders", "50")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = {
        line.split("  ")[1].strip(): line.split()[-1]
        for line in out.splitlines()
        if line.startswith("  ") and "  " in line[2:]
    }
    assert "orders placed                            50 (49 accepted, 1 rejected as invalid)" in out
    assert lines["orders unsettled"] == "0"
    assert lines["events missing"] == "0"
    assert lines["calls failed"] == "0"
    assert "shop.orders.v1.OrderPlaced             49 stored, 49 audited" in out
    assert "services exit codes                      0, 0, 0, 0, 0, 0, 0" in out
    assert (
        "dead letters                             1 (expected 1" in out
    )  # the malformed event, refused by audit
    assert out.rstrip().endswith("embedded nats-server stopped")
    assert "result                                   OK" in out
    assert "Traceback" not in result.stderr


def test_the_secure_demo_runs_the_shop_with_least_privilege_users() -> None:
    """``demo --secure``: every service as its own user from ``eventmicro permissions``; the
    saga still settles every order, and notifications' user is refused billing's business."""
    result = eventmicro_command("demo", "--secure", "--orders", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "least privilege: account SHOP, one nkey user per service" in out
    assert "orders unsettled                         0" in out
    assert "events missing                           0" in out
    assert "least privilege                          notifications' user: 2 of 2 forgeries refused" in out
    assert "refused                                call billing.get_payment" in out
    assert "refused                                publish events.shop.billing.v1.PaymentCaptured" in out
    assert "result                                   OK" in out
    assert "Traceback" not in result.stderr
    assert "NATS refused" not in result.stderr  # no service was refused anything it needs


def test_secure_demo_takes_no_url() -> None:
    result = eventmicro_command("demo", "--secure", "--url", "nats://127.0.0.1:1", timeout=60)
    assert result.returncode == 2
    assert "--secure starts its own nats-server" in result.stderr


def test_help_shows_examples() -> None:
    result = eventmicro_command("server", "--help", timeout=60)
    assert result.returncode == 0
    assert "eventmicro server --cluster 3" in result.stdout


def test_the_public_api_is_pinned_and_sorted() -> None:
    exported = eventmicro.__all__
    assert list(exported) == sorted(exported)
    assert set(exported) == {
        "AuthorizationError", "BadRequest", "Client", "Conflict", "Context", "DeadlineExceeded",
        "InternalError", "NotFound", "Overloaded", "Service", "ServiceError", "ServiceUnavailable",
        "discover", "Replayed", "dead_letter_stream",
        "register_error", "Middleware", "logging_middleware", "timing_middleware",
        "ConfigurationError", "ConnectError", "ConnectOptions", "Connection",
        "ConnectionClosed", "ConnectionState", "ContentTypeMismatch", "EnvelopeError", "Event",
        "EventMicroError", "HeaderDecodeError", "InvalidAttribute", "Message", "MissingAttribute",
        "NatsCluster", "NatsServer", "NoResponders", "Payload", "PayloadDecodeError", "PayloadEncodeError",
        "PayloadError", "PayloadTooLarge", "PermissionDenied", "ServerNotFound", "ServerStartError",
        "StructuredFormatError",
        "Subscription", "TLSOptions", "Timeout", "TypeRegistry", "UnexpectedType", "UnsupportedSpecVersion",
        "__version__", "connect", "decode_payload", "encode_payload", "event_type", "find_server_binary",
        "type_name_of",
        # durable events and the key-value store
        "BucketConfig", "BucketNotFound", "DeadLetter", "DeadLetters", "Entry", "InvalidKey",
        "JetStreamError", "NotStored", "RevisionConflict", "Store", "Stored", "Stream", "StreamConflict",
        "Watch",
        # observability
        "disable_tracing", "enable_tracing", "tracing_enabled",
        # delivery values and codecs
        "Broadcast", "Durable", "Ordered", "PartitionKey", "Shared",
        "Codec", "register_codec", "unregister_codec",
        # resilience: retry policies and circuit breakers
        "BreakerPolicy", "CircuitOpen", "CircuitState", "RetryBudget", "RetryPolicy",
        # dependencies for handlers
        "Dependency",
        # delayed events and scheduled handlers
        "Scheduled", "Tick",
    }  # fmt: skip
    for name in exported:
        assert hasattr(eventmicro, name)


def test_every_error_derives_from_the_one_root() -> None:
    errors = [getattr(eventmicro, n) for n in eventmicro.__all__ if n.endswith(("Error", "Timeout"))]
    errors += [eventmicro.NoResponders, eventmicro.PayloadTooLarge, eventmicro.ServerNotFound]
    errors += [eventmicro.PermissionDenied]
    errors += [eventmicro.InvalidAttribute, eventmicro.MissingAttribute, eventmicro.ConnectionClosed]
    errors += [eventmicro.CircuitOpen]
    for error in errors:
        assert issubclass(error, eventmicro.EventMicroError)
    assert issubclass(eventmicro.Timeout, TimeoutError)
    assert issubclass(eventmicro.EnvelopeError, ValueError)
    assert eventmicro.EnvelopeError.code == 400
    assert eventmicro.NoResponders.code == 503
