"""The local platform's stand-in for API Gateway: POST /clickstream on loopback → Lambda Ingest.

In AWS, the HTTP API `clickstream-STACK-http-api` answers CORS preflights for the shop's origins and
turns each POST /clickstream into a payload-format-2.0 event for Lambda Ingest. moto stores the
API and the function but runs neither without Docker, so the local platform serves the same
contract here: the handler it calls is the deployed function's code, unchanged. Not production
code: it exists only for the local inventory and the tests.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE_KEY = "POST /clickstream"
# API Gateway refuses larger payloads before the function sees them (HTTP API quota: 10 MB).
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
CORS_MAX_AGE_SECONDS = 3600

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that the handlers read."""

    function_name: str
    timeout_seconds: int = 30
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


def api_gateway_event(method: str, path: str, headers: dict[str, str], body: bytes, source_ip: str):
    """The payload-format-2.0 event API Gateway gives a Lambda proxy integration."""
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {name.lower(): value for name, value in headers.items()},
        "requestContext": {
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class HttpApi(ThreadingHTTPServer):
    """The route ``route_key`` (POST /clickstream) → ``handler``, with CORS for
    ``allowed_origins`` (``*`` for any)."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: Handler,
        allowed_origins: Iterable[str],
        route_key: str = ROUTE_KEY,
    ):
        self.handler = handler
        self.allowed_origins = frozenset(allowed_origins)
        self.route_method, self.route_path = route_key.split(" ", 1)
        super().__init__(address, _RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{self.route_path}"

    def cors_origin(self, origin: str | None) -> str | None:
        if origin and (origin in self.allowed_origins or "*" in self.allowed_origins):
            return origin
        return None

    def start_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="local-http-api", daemon=True)
        thread.start()
        return thread


class _RequestHandler(BaseHTTPRequestHandler):
    server: HttpApi

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the ingest logs every request itself

    def _cors_headers(self) -> dict[str, str]:
        origin = self.server.cors_origin(self.headers.get("Origin"))
        if origin is None:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, **self._cors_headers()}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _not_found(self) -> None:
        self._reply(404, b'{"message":"Not Found"}', {"Content-Type": "application/json"})

    def do_OPTIONS(self) -> None:
        if self.path != self.server.route_path:
            return self._not_found()
        headers = {}
        if self.server.cors_origin(self.headers.get("Origin")):
            headers = {
                "Access-Control-Allow-Methods": f"{self.server.route_method}, OPTIONS",
                "Access-Control-Allow-Headers": "content-type",
                "Access-Control-Max-Age": str(CORS_MAX_AGE_SECONDS),
            }
        return self._reply(204, b"", headers)

    def do_POST(self) -> None:
        if self.command != self.server.route_method or self.path != self.server.route_path:
            return self._not_found()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PAYLOAD_BYTES:
            return self._reply(
                413, b'{"message":"Request Entity Too Large"}', {"Content-Type": "application/json"}
            )
        body = self.rfile.read(length)
        event = api_gateway_event(
            self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
        )
        response = self.server.handler(event, LambdaContext("ingest"))
        payload = response.get("body") or ""
        raw = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        return self._reply(response.get("statusCode", 200), raw, response.get("headers") or {})
