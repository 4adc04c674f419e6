"""The web console: server-rendered pages over the api's own resources (docs/console.md)."""

from tocsin_api.console.routes import install

__all__ = ["install"]
