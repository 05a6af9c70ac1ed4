"""The REST API (JSON over HTTP, versioned under /v2): the same ops as the ZeroMQ
protocol, for orioncli users' scripts and dashboards (docs/protocol.md, "REST API").

A route turns method, path, query and body into one op message and hands it to
`Service.dispatch`, which runs it under the controller's lock. Refusals map to HTTP
statuses: 400 for a bad request, 404 for an unknown name or route, 405 for a method the
path does not have, 409 when the pool is busy, 500 for a bug (logged).
"""
from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from orion_controller.fields import Invalid, NotFound
from orion_controller.pool import Busy

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
_SEGMENT = r"([^/]+)"

# (method, path pattern, op builder(path parts, query, body) -> message, reply view)
Builder = Callable[[tuple[str, ...], dict[str, str], dict], dict]
View = Callable[[dict], dict]


def _same(reply: dict) -> dict:
    return reply


def _tasks(reply: dict) -> dict:
    return {"ok": True, "tasks": reply["leases"]}


def _nodes(reply: dict) -> dict:
    return {"ok": True, "nodes": reply["nodes"]}


def _quota_key(parts: tuple[str, ...]) -> dict:
    return dict(zip(("client_id", "device_type", "device_vendor"), parts))


_ROUTES: list[tuple[str, re.Pattern, Builder, View]] = [
    (method, re.compile(f"^/v2/{pattern}$"), build, view) for method, pattern, build, view in [
        ("GET", "summary", lambda p, q, b: {"op": "summary"}, _same),
        ("GET", "nodes", lambda p, q, b: {"op": "status"}, _nodes),
        ("GET", "tasks", lambda p, q, b: {"op": "status"}, _tasks),
        ("GET", "groups", lambda p, q, b: {"op": "group_list"}, _same),
        ("DELETE", f"groups/{_SEGMENT}",
         lambda p, q, b: {"op": "release_group", "group_id": p[0]}, _same),
        ("GET", "custom_devices",
         lambda p, q, b: {"op": "custom_device_list",
                          "full_fields": q.get("full_fields", "false").lower() == "true"}, _same),
        ("POST", "custom_devices", lambda p, q, b: {**b, "op": "custom_device_add"}, _same),
        ("GET", f"custom_devices/{_SEGMENT}",
         lambda p, q, b: {"op": "custom_device_info", "name": p[0]}, _same),
        ("PUT", f"custom_devices/{_SEGMENT}",
         lambda p, q, b: {**b, "op": "custom_device_update", "name": p[0]}, _same),
        ("DELETE", f"custom_devices/{_SEGMENT}",
         lambda p, q, b: {"op": "custom_device_del", "name": p[0]}, _same),
        ("GET", "quotas", lambda p, q, b: {"op": "quota_list"}, _same),
        ("GET", f"quotas/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}",
         lambda p, q, b: {"op": "quota_info", **_quota_key(p)}, _same),
        ("PUT", f"quotas/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}",
         lambda p, q, b: {**b, "op": "quota_set", **_quota_key(p)}, _same),
        ("DELETE", f"quotas/{_SEGMENT}",
         lambda p, q, b: {"op": "quota_del", "client_id": p[0]}, _same),
        ("DELETE", f"quotas/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}",
         lambda p, q, b: {"op": "quota_del", **_quota_key(p)}, _same),
    ]]


def start(service: Any, host: str, port: int) -> ThreadingHTTPServer:
    """Listens (raises OSError if it cannot) and serves in a daemon thread."""
    handler = type("Handler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="orion-rest", daemon=True).start()
    log.info("REST API on http://%s:%d/v2", host, server.server_address[1])
    return server


class _Handler(BaseHTTPRequestHandler):
    service: Any
    server_version = "orion-controller"

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST %s: " + format, self.client_address[0], *args)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        allowed = []
        for route_method, pattern, build, view in _ROUTES:
            match = pattern.match(url.path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            parts = tuple(unquote(part) for part in match.groups())
            self._run(build, view, parts, query, created=method == "POST")
            return
        if allowed:
            self._send(405, {"ok": False, "error": f"{method} {url.path}: use "
                                                   f"{', '.join(allowed)}"})
        else:
            self._send(404, {"ok": False, "error": f"no route {url.path}; see /v2/... in "
                                                   f"docs/protocol.md"})

    def _run(self, build: Builder, view: View, parts: tuple[str, ...], query: dict[str, str],
             created: bool) -> None:
        try:
            message = build(parts, query, self._body())
            reply = view({"ok": True, **self.service.dispatch(message)})
        except NotFound as why:
            self._send(404, {"ok": False, "error": str(why)})
        except Invalid as why:
            self._send(400, {"ok": False, "error": str(why)})
        except Busy as why:
            self._send(409, {"ok": False, "error": str(why), "retry": True})
        except Exception:   # a bug must cost one request, not the server
            log.exception("REST %s %s failed", self.command, self.path)
            self._send(500, {"ok": False, "error": "internal error of the controller "
                                                   "(see its log)"})
        else:
            self._send(201 if created else 200, reply)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise Invalid(f"body of {length} bytes is larger than {MAX_BODY_BYTES}")
        if not length:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, RecursionError):
            raise Invalid("body is not JSON") from None
        if not isinstance(body, dict):
            raise Invalid("body must be a JSON object")
        return body

    def _send(self, status: int, reply: dict) -> None:
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
