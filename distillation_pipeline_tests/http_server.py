"""A real HTTP server on 127.0.0.1 for tests of our HTTP clients (webhooks, model APIs)."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[str, dict], tuple[int, bytes]]


class RecordingServer:
    def __init__(self, responder: Responder) -> None:
        self.requests: list[dict] = []
        self.responder = responder
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                payload = json.loads(body) if body else {}
                recorder.requests.append({"path": self.path, "json": payload, "headers": dict(self.headers)})
                status, reply = recorder.responder(self.path, payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


@contextmanager
def serve(responder: Responder) -> Iterator[RecordingServer]:
    server = RecordingServer(responder)
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
