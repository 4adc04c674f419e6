"""Tocsin's REST/JSON API for people and tools (docs/api.md).

Stateless: every request is authenticated here (a bad credential is 401 before any gRPC
call), then served by the other services over gRPC with the caller's own credential, so
the actor they record is the caller. Config-owned resources (services, policies, users) are
read from the same validated config file every service loads, authorised with ``decide``.
"""
