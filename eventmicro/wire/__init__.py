"""The wire layer: what crosses NATS, as bytes and headers — pure, no I/O.

The CloudEvents NATS binding (binary and structured mode, header values), the event value,
codecs and the conversion of JSON to typed values, names and subjects, type lookup and JSON
Schemas, and the error replies of the NATS Service API. Nothing here opens a socket or
imports anything of eventmicro above it; every module is unit-tested without a server.
"""
