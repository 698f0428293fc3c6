"""Structured logs: service, instance, handler, event id and type, trace id on every record.

::

    from eventmicro import logs

    logs.configure(json=True, level="INFO")   # or EVENTMICRO_LOG_FORMAT=json with Service.run()

One JSON object per line (time, level, logger, message, service, instance, handler, subject,
event_id, event_type, trace_id, correlation_id, exception). To keep your own handlers, add
`ContextFilter` to them instead: each record then has ``record.eventmicro_context``.
"""

from __future__ import annotations

from eventmicro.observability.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure,
    redact,
    trace_id,
)

__all__ = ["ContextFilter", "JsonFormatter", "TextFormatter", "configure", "redact", "trace_id"]
