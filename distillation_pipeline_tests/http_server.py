"""A real HTTP server on 127.0.0.1 for tests of our HTTP clients (webhooks, model APIs)."""

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[str, dict], tuple[int, bytes]]


class _QuietServer(ThreadingHTTPServer):
    """Handler errors are kept (``errors``), not printed: a handler thread outlives its test
    when a client gave up waiting (a timeout test), and socketserver's default ``handle_error``
    then printed "Exception occurred during processing of request" into whichever later test's
    captured stderr was open, failing tests that assert they print nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.errors: list[BaseException] = []

    def handle_error(self, request: object, client_address: object) -> None:
        self.errors.append(sys.exc_info()[1])  # type: ignore[arg-type]


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

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
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
