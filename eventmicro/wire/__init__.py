"""The wire layer: what crosses NATS, as bytes and headers — pure, no I/O.

The CloudEvents NATS binding (binary and structured mode, header values), the event value,
payload codecs (a `Codec` protocol, one module and one registration per codec, one media-type
table in `media`) and the conversion of JSON to typed values, names and subjects, type lookup
and JSON Schemas, and the error replies of the NATS Service API.

Inside, modules import only downwards (no cycles): media, attributes, clock, strictjson,
convert < headervalues < codecs < message < event < binary, structured < binding; plain, types
and jsonschema build on codecs; natsjwt (NATS JWTs and `.creds`, on nkeys) stands alone.
Nothing here opens a socket or imports anything of eventmicro above it; every module is
unit-tested without a server.
"""
