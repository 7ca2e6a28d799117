"""A stand-in for Slack's side of response URLs and incoming webhooks: a local HTTP server
that records every message the control plane posts (and can answer 500 or 404 a few times,
as Slack does on a bad day)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SlackInbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[int] = []  # statuses to answer before accepting again
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = inbox.failures.pop(0) if inbox.failures else 200
                if status == 200:
                    inbox.messages.append((self.path, json.loads(body or b"{}")))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"error")

            def log_message(self, *args: Any) -> None:
                """Quiet: the tests read what was posted, not the server's access log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def texts(self, path: str | None = None) -> list[str]:
        return [m.get("text", "") for p, m in self.messages if path is None or p == path]

    def wait_for(self, path: str, contains: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.texts(path) if contains in t]
            if found:
                return found[-1]
            time.sleep(0.1)
        raise AssertionError(f"no message with {contains!r} at {path} in {timeout}s: {self.texts(path)}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
