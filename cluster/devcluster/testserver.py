"""A tiny HTTP server for testing the node agent: ``python -m devcluster.testserver``.

Listens on ``$TESTSERVER_HOST:$TESTSERVER_PORT`` (default ``$POD_IP:8080``). ``/healthz``
answers 200; ``/readyz`` 200, or 503 once SIGTERM arrived (it then drains for
``$TESTSERVER_DRAIN_SECONDS``, default 1, and exits 0); ``/env`` returns its environment
as JSON; ``/resolve/NAME`` the IPv4 address NAME resolves to; ``/exit/N`` exits with
status N.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

draining = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b"ok")
        elif self.path == "/readyz":
            self._send(503, b"draining") if draining.is_set() else self._send(200, b"ok")
        elif self.path == "/env":
            self._send(200, json.dumps(dict(os.environ)).encode(), "application/json")
        elif self.path.startswith("/resolve/"):
            name = self.path.split("/", 2)[2]
            try:
                ip = socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
                self._send(200, str(ip).encode())
            except OSError as e:
                self._send(404, str(e).encode())
        elif self.path.startswith("/exit/"):
            self._send(200, b"bye")
            os._exit(int(self.path.rsplit("/", 1)[1]))
        else:
            self._send(200, os.environ.get("POD_NAME", "").encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    host = os.environ.get("TESTSERVER_HOST") or os.environ.get("POD_IP") or "127.0.0.1"
    port = int(os.environ.get("TESTSERVER_PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    drain = float(os.environ.get("TESTSERVER_DRAIN_SECONDS", "1"))

    def on_term(signum: int, frame: FrameType | None) -> None:
        draining.set()
        print("SIGTERM: draining", flush=True)
        threading.Timer(drain, server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    print(f"serving on {host}:{port}", flush=True)
    server.serve_forever()
    print("drained, exiting", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
