"""The aiohttp side of the V2 protocol that every server shares: JSON errors, body limits, the standard routes.

``error_middleware`` turns ``V2Error`` (and aiohttp's own HTTP errors, e.g. 413 from ``client_max_size``) into
``{"error": "..."}`` JSON. Every server's app comes from ``v2_app``, whose bodies ``read_body`` decodes (gzip, deflate,
br): aiohttp's HTTP parser would do it before the app sees the request, and answer a body that does not decode (a
deflate stream cut short, zstd) in plain text with a traceback in the log. ``add_routes`` wires the standard
endpoints to a ``Backend`` (the ONNX Runtime server and the emulated instance both use it), so both parse and validate
a request the same way (``servers.v2``) and reject the same requests with the same 4xx; a versioned path names a
version the model has, or is a 404.

A 5xx means the server is at fault (a bug: 500; not ready: 503), never the request: the dispatcher takes an instance
that answers 5xx out of service.
"""

from __future__ import annotations

import math
import sys
import traceback
import zlib
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

try:  # optional, as it is to aiohttp (geventhttpclient, a Locust dependency, brings it)
    import brotli

    # Decoding must stop at the body limit; a brotli too old to bound its output is not offered (415).
    if "output_buffer_limit" not in (brotli.Decompressor.process.__doc__ or ""):  # pragma: no cover
        brotli = None
except ImportError:  # pragma: no cover
    brotli = None
_DECODE_ERRORS = (zlib.error, *((brotli.error,) if brotli is not None else ()))


def json_response(obj: Any, status: int = 200) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def json_error(status: int, message: str) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status=status)


class UnreadableBody(V2Error):
    """A body that cannot be read as sent (its Content-Encoding): 400, and the connection is closed after it."""

    def __init__(self, message: str):
        super().__init__(400, f"unreadable request body: {message}")


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Turn V2Error and aiohttp HTTP errors into JSON ``{"error": ...}``; unexpected bugs into a JSON 500."""
    try:
        return await handler(request)
    except V2Error as exc:
        resp = json_error(exc.status, exc.message)
        # A body that could not be read or decoded: where it ended on the wire is anyone's guess, so say the
        # connection closes (aiohttp drops it anyway when the payload itself failed).
        if isinstance(exc, UnreadableBody) or request.content.exception() is not None:
            resp.force_close()
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.text or exc.reason)
    except Exception as exc:  # a bug: say so in JSON, keep the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        return json_error(500, f"internal error: {type(exc).__name__}: {exc}")


DECODES_BODY = web.AppKey("v2_decodes_body", bool)
BODY_LIMIT = web.AppKey("v2_body_limit", int)  # client_max_size, for a front that reads bodies itself


def v2_app(client_max_size: int, *middlewares) -> web.Application:
    """The aiohttp app of a V2 server: ``error_middleware`` outermost, then ``middlewares``; bodies left encoded by
    aiohttp's parser (``auto_decompress`` off) for ``read_body`` to decode within ``client_max_size``."""
    app = web.Application(
        client_max_size=client_max_size,
        middlewares=[error_middleware, *middlewares],
        handler_args={"auto_decompress": False},
    )
    app[DECODES_BODY] = True
    app[BODY_LIMIT] = client_max_size
    return app


CODINGS = ("gzip", "x-gzip", "deflate", *(("br",) if brotli is not None else ()), "identity")


def decode_body(body: bytes, coding: str, limit_bytes: int) -> bytes:
    """``body`` decoded from its Content-Encoding ``coding`` (one of CODINGS, any case); at most ``limit_bytes`` out.

    V2Error 415 for another coding, 413 when the decoded body exceeds the limit (a small body can decode to a huge
    one: decoding stops there), UnreadableBody (400) when the bytes do not decode or stop short of the stream's end.
    """
    name = coding.strip().lower()
    if name in ("", "identity"):
        return body
    if name not in CODINGS:
        raise V2Error(415, f"unsupported Content-Encoding {coding[:40]!r} (supported: {', '.join(CODINGS)})")
    try:
        if name == "br":
            d = brotli.Decompressor()
            out = d.process(body, output_buffer_limit=limit_bytes + 1)
            complete = d.is_finished()
        else:
            if name == "deflate":  # RFC 9110's deflate is zlib-wrapped; raw deflate is common too (aiohttp takes it)
                wbits = zlib.MAX_WBITS if body[:1] and body[0] & 0x0F == 8 else -zlib.MAX_WBITS
            else:
                wbits = 16 + zlib.MAX_WBITS
            d = zlib.decompressobj(wbits)
            out = d.decompress(body, limit_bytes + 1)
            complete = d.eof
            if d.unused_data:  # a second gzip member, or junk: refused rather than silently dropped
                raise UnreadableBody(f"{len(d.unused_data)} byte(s) after the end of the {name} stream")
    except _DECODE_ERRORS as exc:
        raise UnreadableBody(f"not valid {name} ({' '.join(str(exc).split())})") from None
    if len(out) > limit_bytes:
        raise V2Error(413, f"request body too large: above {limit_bytes} bytes once decoded from {name}")
    if not complete:
        raise UnreadableBody(f"the {name} stream is cut short")
    return out


async def read_body(request: web.Request) -> bytes:
    """The whole request body, decoded from its Content-Encoding (``decode_body``) in a ``v2_app``; V2Error 413
    above the app's ``client_max_size``, 400 if it cannot be read, 415 for an unsupported coding."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise V2Error(413, f"request body too large: {exc.text}") from None
    except (RequestPayloadError, HttpProcessingError) as exc:  # the transfer itself failed (chunking, a decoder)
        # aiohttp drains an unread body after the handler, re-raising this error and logging it with a traceback as
        # "Unhandled exception": the request's fault, answered here. Marked finished, it is left alone (the
        # middleware closes the connection, so nothing after it is read).
        if not request.content.is_eof():
            request.content.feed_eof()
        cause = exc.__cause__ or exc
        raise UnreadableBody(" ".join(str(getattr(cause, "message", "") or cause).split())) from None
    coding = request.headers.get("Content-Encoding")
    if coding is None or not request.app.get(DECODES_BODY, False):  # none, or aiohttp's parser decoded it
        return body
    return decode_body(body, coding, request.client_max_size)


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

    def model(request: web.Request) -> tuple[Backend, str, ModelMetadata]:
        """The backend, the model named in the URL and its metadata; 404 for an unknown model or version."""
        backend, name = request.app[key], request.match_info["name"]
        meta = backend.metadata(name)
        version = request.match_info.get("version")
        if version is not None and version not in meta.versions:
            raise V2Error(
                404, f"unknown version {version!r} of model {name!r} (versions: {', '.join(meta.versions) or 'none'})"
            )
        return backend, name, meta

    async def model_meta(request: web.Request) -> web.Response:
        return json_response(model(request)[2].to_json())

    async def model_ready(request: web.Request) -> web.Response:
        backend, name, _ = model(request)
        ok = backend.ready(name)
        return json_response({"name": name, "ready": ok}, status=200 if ok else 503)

    async def infer(request: web.Request) -> web.Response:
        backend, name, meta = model(request)
        if not backend.ready(name):  # starting or shutting down: the server's state, not the request's fault
            raise V2Error(503, f"model {name!r} is not ready")
        body = await read_body(request)
        req = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        batch = validate_request(req, meta, backend.max_batch(name))
        outputs, params = await backend.infer(name, req, batch)
        version = request.match_info.get("version") or (meta.versions[0] if meta.versions else "1")
        data, headers = encode_infer_response(name, outputs, req, params, version)
        return web.Response(body=data, headers=headers)

    app.router.add_get("/v2", server_meta)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, model_meta)
        app.router.add_get(prefix + "/ready", model_ready)
        app.router.add_post(prefix + "/infer", infer)
