"""The transport layer: the only importer of nats-py, and its one translation of errors.

The connection (publish, request, subscribe, drain), JetStream streams, consumers and acks,
the key-value store, the embedded nats-server and cluster, connection settings. Every use of
a nats-py private is in `eventmicro.transport.natspy`, checked against one nats-py version.
"""
