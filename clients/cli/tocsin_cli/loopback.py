"""The loopback redirect of a browser login (RFC 8252 §7.3): a one-shot HTTP listener on
127.0.0.1 at a port the system picks, that takes the provider's redirect and hands its URL
to the waiting login."""

from __future__ import annotations

import queue
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

CALLBACK_PATH = "/callback"
DONE_PAGE = (
    b"<!doctype html><title>tocsin</title><p>Logged in: you may close this tab and go back "
    b"to the terminal.</p>"
)


class LoopbackRedirect:
    """Listens until the redirect arrives (or :meth:`wait` times out)."""

    def __init__(self) -> None:
        self._urls: queue.Queue[str] = queue.Queue()
        urls = self._urls

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith(CALLBACK_PATH):
                    self.send_error(404)
                    return
                urls.put(f"http://127.0.0.1:{port()}{self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(DONE_PAGE)))
                self.end_headers()
                self.wfile.write(DONE_PAGE)

            def log_message(self, format: str, *args: object) -> None:
                return  # not on the person's terminal

        def port() -> int:
            return int(self._server.server_address[1])

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{int(self._server.server_address[1])}{CALLBACK_PATH}"

    def wait(self, timeout_s: float) -> str | None:
        """The callback URL the browser was sent to, or None after ``timeout_s``."""
        try:
            return self._urls.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
