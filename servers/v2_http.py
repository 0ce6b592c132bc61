"""The aiohttp side of the V2 protocol that every server shares: JSON errors, body limits, the standard routes.

``error_middleware`` turns ``V2Error`` (and aiohttp's own HTTP errors, e.g. 413 from ``client_max_size``) into
``{"error": "..."}`` JSON. ``add_routes`` wires the standard endpoints to a ``Backend`` (the ONNX Runtime server and
the emulated instance both use it), so both parse and validate a request the same way (``servers.v2``) and reject the
same requests with the same 4xx.

A 5xx means the server is at fault (a bug: 500; not ready: 503), never the request: the dispatcher takes an instance
that answers 5xx out of service.
"""

from __future__ import annotations

import math
import sys
import traceback
from typing import Any, Protocol

import numpy as np
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from servers.v2 import (
    HEADER_LENGTH,
    InferRequest,
    ModelMetadata,
    V2Error,
    encode_infer_response,
    parse_infer_request,
    validate_request,
)


def json_response(obj: Any, status: int = 200) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def json_error(status: int, message: str) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Turn V2Error and aiohttp HTTP errors into JSON ``{"error": ...}``; unexpected bugs into a JSON 500."""
    try:
        return await handler(request)
    except V2Error as exc:
        resp = json_error(exc.status, exc.message)
        if request.content.exception() is not None:  # an unreadable body: aiohttp drops the connection, say so
            resp.force_close()
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.text or exc.reason)
    except Exception as exc:  # a bug: say so in JSON, keep the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        return json_error(500, f"internal error: {type(exc).__name__}: {exc}")


async def read_body(request: web.Request) -> bytes:
    """The whole request body; V2Error 413 above the app's ``client_max_size``, 400 if it cannot be decoded."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise V2Error(413, f"request body too large: {exc.text}") from None
    except (RequestPayloadError, HttpProcessingError) as exc:  # e.g. a Content-Encoding the body does not follow
        cause = exc.__cause__ or exc
        detail = " ".join(str(getattr(cause, "message", "") or cause).split())
        raise V2Error(400, f"unreadable request body: {detail}") from None


def max_body_bytes(meta: ModelMetadata, max_batch: int) -> int:
    """A ``client_max_size`` that fits ``max_batch`` samples even as JSON (~32 bytes per element) plus slack."""
    per_sample = sum(math.prod(d for d in t.shape[1:] if d > 0) for t in meta.inputs) or 1024
    return max(1 << 20, max_batch * per_sample * 32 + (64 << 10))


class Backend(Protocol):
    """What ``add_routes`` needs from a server: metadata, readiness, a batch limit, and inference."""

    server_name: str

    def metadata(self, model: str) -> ModelMetadata:
        """Metadata of ``model``; V2Error 404 if unknown."""

    def ready(self, model: str | None = None) -> bool:
        """Whether the server (or one model) can take requests."""

    def max_batch(self, model: str) -> int:
        """The largest batch accepted for ``model``."""

    async def infer(self, model: str, req: InferRequest, batch_size: int) -> tuple[dict[str, np.ndarray], dict]:
        """Run a validated request; returns (outputs, response parameters such as queue_ms/compute_ms)."""


def add_routes(app: web.Application, key: web.AppKey) -> None:
    """Add the V2 endpoints, served by the Backend stored at ``app[key]`` (set at startup)."""

    async def server_meta(request: web.Request) -> web.Response:
        return json_response(
            {"name": request.app[key].server_name, "version": "1", "extensions": ["binary_tensor_data"]}
        )

    async def live(request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(request: web.Request) -> web.Response:
        ok = request.app[key].ready()
        return json_response({"ready": ok}, status=200 if ok else 503)

    async def model_meta(request: web.Request) -> web.Response:
        return json_response(request.app[key].metadata(request.match_info["name"]).to_json())

    async def model_ready(request: web.Request) -> web.Response:
        backend, name = request.app[key], request.match_info["name"]
        backend.metadata(name)
        ok = backend.ready(name)
        return json_response({"name": name, "ready": ok}, status=200 if ok else 503)

    async def infer(request: web.Request) -> web.Response:
        backend, name = request.app[key], request.match_info["name"]
        meta = backend.metadata(name)
        if not backend.ready(name):  # starting or shutting down: the server's state, not the request's fault
            raise V2Error(503, f"model {name!r} is not ready")
        body = await read_body(request)
        req = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        batch = validate_request(req, meta, backend.max_batch(name))
        outputs, params = await backend.infer(name, req, batch)
        data, headers = encode_infer_response(name, outputs, req, params, meta.versions[0] if meta.versions else "1")
        return web.Response(body=data, headers=headers)

    app.router.add_get("/v2", server_meta)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, model_meta)
        app.router.add_get(prefix + "/ready", model_ready)
        app.router.add_post(prefix + "/infer", infer)
