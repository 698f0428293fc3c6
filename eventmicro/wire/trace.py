"""What travels with a message from a handler into the calls and events it causes: the
CloudEvents extensions for correlation, W3C trace context and the caller's remaining budget."""

from __future__ import annotations

from typing import Final

from eventmicro.wire.attributes import ExtensionValue

__all__ = ["CORRELATION_EXTENSION", "MAX_BUDGET_MS", "TIMEOUT_EXTENSION", "Trace"]

TIMEOUT_EXTENSION: Final = "timeoutms"  # the caller's remaining budget, in milliseconds
CORRELATION_EXTENSION: Final = "correlationid"
MAX_BUDGET_MS: Final = 2**31 - 1  # the budget extension is a CloudEvents Integer (32 bits)


class Trace:
    """What travels from a handler into the calls and events it causes."""

    __slots__ = ("correlation_id", "deadline", "traceparent", "tracestate")

    def __init__(
        self,
        correlation_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.correlation_id = correlation_id
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.deadline = deadline  # time.monotonic() at which the current work must be done

    def extensions(self) -> dict[str, ExtensionValue]:
        out: dict[str, ExtensionValue] = {}
        if self.correlation_id:
            out[CORRELATION_EXTENSION] = self.correlation_id
        if self.traceparent:
            out["traceparent"] = self.traceparent
            if self.tracestate:
                out["tracestate"] = self.tracestate
        return out
