"""Orion controller: the pool's resource manager (docs/protocol.md, "Controller").

`pool` holds nodes, GPUs and leases (pure logic), `placement` decides where a request
goes, `service` puts the pool behind a ZeroMQ ROUTER socket, `client` is the small
synchronous helper the other components use to talk to it.
"""
