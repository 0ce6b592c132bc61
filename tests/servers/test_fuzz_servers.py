"""Fuzzing the infer endpoint of all three servers: every malformed request is a 4xx with a JSON ``error``.

Hypothesis draws requests that are valid but for one broken part (a field of the JSON, one tensor value, a binary
length, the URL's model or version, the Content-Encoding), and raw bytes; the ONNX Runtime model server, the emulated
instance and the dispatcher (in front of in-process emulated instances) each get well over a thousand, with odd
``X-Request-ID`` and ``Content-Type`` headers and chunked bodies mixed in. None may answer 5xx or anything but a JSON
``{"error": ...}``, log an error (a traceback) or print one on stderr.

The servers run in-process on one private event loop that synchronous tests drive (``Served``): hypothesis calls its
test function once per example, and async tests would pay for a fresh loop and fresh servers every time. Each test
has its own fixed seed (the same examples on every run, as the rest of the suite is seeded) and keeps no example
database.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import urllib.parse
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from harness.core.profiles import Profile
from servers import models, v2, v2_http
from servers.dispatcher import DispatcherConfig
from servers.dispatcher import create_app as dispatcher_app
from servers.emulated import EmulatedConfig
from servers.emulated import create_app as emulated_app
from servers.model_server import ModelServerConfig
from servers.model_server import create_app as model_app
from servers.pool_file import Instance, PoolFile
from tests.conftest import make_profile_frame

ITYPE = "fuzz.x"
LIMIT = 16  # every server's batch limit: the model server's max_batch, the profile's largest bucket
EXAMPLES = 1050  # per server; the test asserts at least 1,000 requests were sent
DISPATCHED = ("rm2", "dien")  # one dispatcher per model, two emulated instances behind each
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


# -- in-process servers on a private loop --------------------------------------------------------------------------
@dataclass
class Served:
    """In-process servers on one private event loop, driven from synchronous code."""

    runner: asyncio.Runner = field(default_factory=asyncio.Runner)
    clients: dict[str, TestClient] = field(default_factory=dict)
    backends: list[TestServer] = field(default_factory=list)

    def start(self, name: str, app) -> TestClient:
        """Serve ``app`` on a free loopback port; requests go to it by ``name``."""

        async def go():  # the client's cookie jar wants the running loop
            client = TestClient(TestServer(app, host="127.0.0.1"))
            await client.start_server()
            return client

        self.clients[name] = client = self.runner.run(go())
        return client

    def backend(self, app) -> str:
        """Serve ``app`` on a free loopback port (a dispatcher's instance); returns its base URL."""

        async def go():
            srv = TestServer(app, host="127.0.0.1")
            await srv.start_server()
            return srv

        srv = self.runner.run(go())
        self.backends.append(srv)
        return str(srv.make_url("")).rstrip("/")

    def post(self, name: str, case: Case) -> tuple[int, str, bytes]:
        """POST ``case`` to server ``name``: (status, content type, body)."""

        async def go():
            kw = {"chunked": True} if case.chunked else {}
            async with self.clients[name].post(case.path, data=case.body, headers=case.headers, **kw) as resp:
                return resp.status, resp.content_type, await resp.read()

        return self.runner.run(asyncio.wait_for(go(), 30))

    def wire(self, name: str, data: bytes, half_close: bool = False) -> bytes:
        """Write ``data`` (a whole HTTP request, any bytes) to server ``name``; everything it answers until EOF."""

        async def go():
            reader, writer = await asyncio.open_connection("127.0.0.1", self.clients[name].server.port)
            try:
                writer.write(data)
                await writer.drain()
                if half_close:
                    writer.write_eof()
                return await reader.read()
            except ConnectionError:  # the server answered and closed while we were still writing
                return await reader.read()
            finally:
                writer.close()

        return self.runner.run(asyncio.wait_for(go(), 30))

    def close(self) -> None:
        """Stop every server and the loop."""
        for client in self.clients.values():
            self.runner.run(client.close())
        for srv in self.backends:
            self.runner.run(srv.close())
        self.runner.close()


def tiny_profile() -> Profile:
    """0.05 ms at every (model, bucket) of ITYPE, buckets 8 and LIMIT: validation, not sleeping, is what is tested."""
    frame = make_profile_frame({(ITYPE, m): {8: [0.05, 0.05], LIMIT: [0.05, 0.05]} for m in models.MODEL_NAMES})
    return Profile.from_frame(frame, drop_max=False)


@pytest.fixture(scope="module")
def served(model_dir):
    """The model server (every model), one emulated instance per model, one dispatcher per DISPATCHED model."""
    profile = tiny_profile()
    s = Served()
    try:
        s.start("onnx", model_app(ModelServerConfig(models=models.MODEL_NAMES, model_dir=model_dir, max_batch=LIMIT)))
        for m in models.MODEL_NAMES:
            s.start(f"emulated-{m}", emulated_app(EmulatedConfig(ITYPE, m), profile))
        for m in DISPATCHED:
            urls = [s.backend(emulated_app(EmulatedConfig(ITYPE, m, seed=k), profile)) for k in range(2)]
            pool = PoolFile(m, tuple(Instance(f"{ITYPE}-{k}", u, ITYPE, 0.1) for k, u in enumerate(urls)))
            s.start(f"dispatcher-{m}", dispatcher_app(DispatcherConfig(pool, qos_ms=500.0), profile))
        yield s
    finally:
        s.close()


# -- what is sent ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One request: path, body, headers; ``what`` names the broken part; ``maybe_valid`` lets the oracle decide."""

    model: str
    path: str
    body: bytes
    headers: dict[str, str]
    what: str
    chunked: bool = False
    maybe_valid: bool = False


I64 = (-(2**63), 2**64 - 1)  # orjson writes integers up to uint64
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(*I64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
)
NOT_NONE = JUNK.filter(lambda v: v is not None)
# Header text the aiohttp client will send: no control characters but tab, no lone surrogates.
HEADER_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), include_characters="\t"), max_size=300
)


def _inputs(model: str, batch: int, seed: int) -> dict[str, np.ndarray]:
    return models.make_inputs(models.get_spec(model), batch, np.random.default_rng(seed))


def _json_doc(model: str, batch: int, seed: int) -> dict:
    return orjson.loads(v2.encode_infer_request(_inputs(model, batch, seed), binary=False).body)


def _infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def _bad_value(t: models.TensorSpec):
    """Values that no tensor of ``t``'s datatype may hold, wherever they stand in its data."""
    common = [
        st.text(max_size=6),
        st.none(),
        st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
        st.lists(st.integers(0, 3), min_size=2, max_size=3),  # ragged: one element where a number should be
    ]
    if t.datatype == "INT64":
        return st.one_of(
            st.integers(t.high, 2**63 - 1),
            st.integers(-(2**63), -1),
            st.integers(2**63, 2**64 - 1),
            st.floats(allow_nan=False, allow_infinity=False),  # 1.7 as much as 3.0: an id is a JSON integer
            *common,
        )
    return st.one_of(  # FP32
        st.floats(min_value=3.41e38, allow_infinity=False),
        st.floats(max_value=-3.41e38, allow_infinity=False),
        *common,
    )


@st.composite
def json_break(draw, model: str) -> Case:
    """A JSON request valid but for one part."""
    spec = models.get_spec(model)
    batch, seed = draw(st.integers(1, 4)), draw(st.integers(0, 2**16))
    doc = _json_doc(model, batch, seed)
    inputs = doc["inputs"]
    k = draw(st.integers(0, len(inputs) - 1))
    item, t = inputs[k], spec.inputs[k]
    what = draw(
        st.sampled_from(
            [
                "drop-field",
                "name",
                "datatype",
                "shape",
                "data-value",
                "data-all-bool",
                "data-length",
                "data-not-list",
                "input-not-object",
                "duplicate-input",
                "missing-input",
                "extra-input",
                "batch-disagrees",
                "batch-zero",
                "batch-over-limit",
                "parameters",
                "input-parameters",
                "binary-size-without-header",
                "outputs",
                "not-an-object",
                "inputs-not-a-list",
            ]
        )
    )
    if what == "drop-field":
        del item[draw(st.sampled_from(["name", "datatype", "shape", "data"]))]
    elif what == "name":
        item["name"] = draw(st.one_of(st.text(max_size=12), NOT_NONE).filter(lambda v: v != t.name))
    elif what == "datatype":
        names = st.sampled_from([*v2.DATATYPES, "FP8", "int64", "BYTES", "STRING", ""])
        item["datatype"] = draw(st.one_of(names, JUNK).filter(lambda v: v != t.datatype))
    elif what == "shape":
        dims = st.sampled_from([0, 1, 2, 13, 2**31, 2**62, 2**63 - 1, 2**64 - 1, -1, -(2**63)])
        shapes = st.one_of(st.lists(st.integers(-2, 40), max_size=5), st.lists(dims, max_size=40), JUNK)
        item["shape"] = draw(shapes.filter(lambda v: v != item["shape"]))
    elif what == "data-value":
        item["data"][draw(st.integers(0, len(item["data"]) - 1))] = draw(_bad_value(t))
    elif what == "data-all-bool":
        item["data"] = draw(st.lists(st.booleans(), min_size=len(item["data"]), max_size=len(item["data"])))
    elif what == "data-length":
        n = draw(st.integers(1, 5))
        item["data"] = item["data"][:-n] if draw(st.booleans()) else item["data"] + [0] * n
    elif what == "data-not-list":
        item["data"] = draw(st.one_of(st.integers(*I64), st.floats(allow_nan=False), st.text(max_size=5), st.none()))
    elif what == "input-not-object":
        inputs[k] = draw(NOT_NONE.filter(lambda v: not isinstance(v, dict)))
    elif what == "duplicate-input":
        inputs.append(dict(item))
    elif what == "missing-input":
        del inputs[k]
    elif what == "extra-input":
        name = draw(st.text(min_size=1, max_size=8).filter(lambda n: n not in {i.name for i in spec.inputs}))
        inputs.append({"name": name, "datatype": "FP32", "shape": [batch, 1], "data": [0.0] * batch})
    elif what == "batch-disagrees":
        other = draw(st.integers(1, 5).filter(lambda b: b != batch))
        inputs[k] = _json_doc(model, other, seed)["inputs"][k]
    elif what == "batch-zero":
        for i in inputs:
            i["shape"][0], i["data"] = 0, []
    elif what == "batch-over-limit":
        doc = _json_doc(model, draw(st.integers(LIMIT + 1, LIMIT + 8)), seed)
    elif what == "parameters":
        doc["parameters"] = draw(NOT_NONE.filter(lambda v: not isinstance(v, dict)))
    elif what == "input-parameters":
        item["parameters"] = draw(NOT_NONE.filter(lambda v: not isinstance(v, dict)))
    elif what == "binary-size-without-header":
        item["parameters"] = {"binary_data_size": draw(st.one_of(st.integers(0, 10**6), NOT_NONE))}
    elif what == "outputs":
        known = {o.name for o in spec.outputs}
        unknown = st.text(max_size=8).filter(lambda n: n not in known)
        doc["outputs"] = draw(
            st.one_of(
                NOT_NONE.filter(lambda v: not isinstance(v, list)),
                st.lists(NOT_NONE.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=3),
                st.lists(st.builds(lambda n: {"name": n}, unknown), min_size=1, max_size=3),
                st.builds(lambda p: [{"name": spec.outputs[0].name, "parameters": p}], NOT_NONE).filter(
                    lambda v: not isinstance(v[0]["parameters"], dict)
                ),
            )
        )
    elif what == "not-an-object":
        doc = draw(NOT_NONE.filter(lambda v: not isinstance(v, dict)))
    elif what == "inputs-not-a-list":
        doc["inputs"] = draw(st.one_of(JUNK.filter(lambda v: not isinstance(v, list) or not v), st.just([])))
    return Case(model, _infer_path(model), orjson.dumps(doc), {"Content-Type": "application/json"}, f"json:{what}")


def _split(enc: v2.EncodedRequest) -> tuple[dict, list[bytes]]:
    """The JSON header of a binary request and its tensor blobs, in input order."""
    hl = int(enc.headers[v2.HEADER_LENGTH])
    head, blobs, offset = orjson.loads(enc.body[:hl]), [], hl
    for item in head["inputs"]:
        size = item["parameters"]["binary_data_size"]
        blobs.append(enc.body[offset : offset + size])
        offset += size
    return head, blobs


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


@st.composite
def binary_break(draw, model: str) -> Case:
    """A binary-extension request valid but for one part: the header length, a tensor's size, bytes, dtype, shape."""
    spec = models.get_spec(model)
    batch, seed = draw(st.integers(1, 4)), draw(st.integers(0, 2**16))
    head, blobs = _split(v2.encode_infer_request(_inputs(model, batch, seed)))
    k = draw(st.integers(0, len(blobs) - 1))
    item, t = head["inputs"][k], spec.inputs[k]
    what = draw(
        st.sampled_from(
            ["header-length", "no-header-length", "size", "truncated", "extra-bytes", "dtype", "shape", "id-range"]
        )
    )
    tail = b""
    if what == "size":
        true = item["parameters"]["binary_data_size"]
        item["parameters"]["binary_data_size"] = draw(
            st.one_of(st.integers(-(2**63), 2**63).filter(lambda n: n != true), NOT_NONE.filter(lambda v: v != true))
        )
    elif what == "dtype":
        same_size = {"INT64": ["UINT64", "FP64"], "FP32": ["INT32", "UINT32"]}[t.datatype]
        item["datatype"] = draw(st.sampled_from(same_size))
    elif what == "shape":
        item["shape"] = [int(np.prod(item["shape"]))]  # the same bytes, another rank
    elif what == "id-range":
        arr = np.frombuffer(blobs[k], dtype="<i8").copy() if t.high else None
        if arr is None:  # a float input: break an id input instead
            k = next(j for j, s in enumerate(spec.inputs) if s.high)
            arr, t = np.frombuffer(blobs[k], dtype="<i8").copy(), spec.inputs[k]
        arr[draw(st.integers(0, arr.size - 1))] = draw(
            st.one_of(st.integers(t.high, 2**63 - 1), st.integers(-(2**63), -1))
        )
        blobs[k] = arr.tobytes()
    text = orjson.dumps(head)
    body = text + b"".join(blobs)
    hl = len(text)
    headers = {v2.HEADER_LENGTH: str(hl), "Content-Type": "application/octet-stream"}
    if what == "header-length":
        headers[v2.HEADER_LENGTH] = draw(
            st.one_of(
                st.integers(-10, len(body) + 100).map(str),
                st.sampled_from(["", " ", "1e3", "0x10", "+", "٣", "9" * 5000, str(2**64)]),
                HEADER_TEXT.filter(lambda s: s.strip() == s),
            ).filter(lambda s: _int_or_none(s.strip()) != hl)
        )
    elif what == "no-header-length":
        del headers[v2.HEADER_LENGTH]
    elif what == "truncated":
        body = body[: -draw(st.integers(1, min(64, len(body) - hl)))]
    elif what == "extra-bytes":
        tail = draw(st.binary(min_size=1, max_size=64))
    return Case(model, _infer_path(model), body + tail, headers, f"binary:{what}")


@st.composite
def raw_break(draw, model: str) -> Case:
    """Bytes that are not a request: random, text, a valid JSON request cut short, deep nesting, random JSON."""
    what = draw(st.sampled_from(["bytes", "text", "cut-short", "deep", "random-json"]))
    if what == "bytes":
        body = draw(st.binary(max_size=2000))
    elif what == "text":
        body = draw(st.text(max_size=500)).encode("utf-8", "surrogatepass")
    elif what == "cut-short":
        full = orjson.dumps(_json_doc(model, draw(st.integers(1, 3)), 0))
        body = full[: draw(st.integers(0, len(full) - 1))]
    elif what == "deep":
        n = draw(st.integers(100, 5000))
        body = draw(st.sampled_from([b"[" * n, b'{"inputs": [{"data": ' + b"[" * n, b'{"a":' * n]))
    else:
        keys = st.sampled_from(["inputs", "outputs", "name", "datatype", "shape", "data", "parameters", "id"])
        value = st.recursive(
            JUNK, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5))
        )
        body = orjson.dumps(draw(st.dictionaries(keys, value, max_size=5)))
    return Case(model, _infer_path(model), body, {}, f"raw:{what}", maybe_valid=True)


SEGMENT = st.text(max_size=12).map(lambda s: urllib.parse.quote(s, safe=""))


@st.composite
def url_break(draw, model: str, served: frozenset[str]) -> Case:
    """A valid request to a model or version that is not served, or to a path that does not exist."""
    enc = v2.encode_infer_request(_inputs(model, draw(st.integers(1, 3)), 0), binary=draw(st.booleans()))
    what = draw(st.sampled_from(["model", "version", "path"]))
    if what == "model":
        path = _infer_path(draw(SEGMENT.filter(lambda s: s not in served and s not in (".", ".."))))
    elif what == "version":
        version = draw(SEGMENT.filter(lambda s: s not in ("1", ".", "..", "")))
        path = f"/v2/models/{model}/versions/{version}/infer"
    else:
        path = f"/v2/models/{model}/" + draw(
            st.sampled_from(["infer/x", "inference", "infer/", "versions/1/infer/x", "versions//infer"])
        )
    return Case(model, path, enc.body, dict(enc.headers), f"url:{what}")


ENCODERS = {"gzip": gzip.compress, "deflate": zlib.compress}
if "br" in v2_http.CODINGS:
    import brotli

    ENCODERS["br"] = brotli.compress


@st.composite
def encoding_break(draw, model: str) -> Case:
    """A Content-Encoding the body does not follow, or a malformed request compressed as declared."""
    coding = draw(st.sampled_from(sorted(ENCODERS)))
    what = draw(st.sampled_from(["not-encoded", "encoded-bad-request", "encoded-cut-short"]))
    if what == "not-encoded":
        inner = draw(st.one_of(json_break(model), binary_break(model), raw_break(model)))
        body = v2.encode_infer_request(_inputs(model, 2, 0)).body if draw(st.booleans()) else inner.body
        headers = {}
    else:
        inner = draw(json_break(model)) if what == "encoded-bad-request" else None
        body = ENCODERS[coding](inner.body if inner else orjson.dumps(_json_doc(model, 2, 0)))
        if what == "encoded-cut-short":
            body = body[: draw(st.integers(0, len(body) - 1))]
        headers = dict(inner.headers) if inner else {}
    headers["Content-Encoding"] = coding
    return Case(model, _infer_path(model), body, headers, f"encoding:{what}")


@st.composite
def with_noise(draw, case: st.SearchStrategy[Case]) -> Case:
    """``case`` with an odd X-Request-ID or Content-Type, and sent chunked, some of the time."""
    c = draw(case)
    headers = dict(c.headers)
    if draw(st.booleans()):
        headers["X-Request-ID"] = draw(st.one_of(HEADER_TEXT, st.sampled_from(["\t", "a" * 257, "é" * 256])))
    if draw(st.booleans()) and "Content-Type" not in headers:
        headers["Content-Type"] = draw(
            st.one_of(
                st.sampled_from(["application/json", "text/plain", "multipart/form-data", "application/x-www-form"]),
                HEADER_TEXT.filter(lambda s: s.strip()),
            )
        )
    return Case(**{**c.__dict__, "headers": headers, "chunked": draw(st.booleans())})


def cases(models_served: tuple[str, ...]) -> st.SearchStrategy[Case]:
    """Every kind of malformed request to one of ``models_served``."""
    served = frozenset(models_served)

    def for_model(m: str) -> st.SearchStrategy[Case]:
        return st.one_of(
            json_break(m), json_break(m), binary_break(m), raw_break(m), url_break(m, served), encoding_break(m)
        )

    return with_noise(st.sampled_from(models_served).flatmap(for_model))


# -- what must come back ---------------------------------------------------------------------------------------------
def oracle(server: str, case: Case) -> bool:
    """Whether ``case`` is a valid request for ``server``: the codec's own verdict, the dispatcher's id rule."""
    try:
        req = v2.parse_infer_request(case.body, case.headers.get(v2.HEADER_LENGTH))
        v2.validate_request(req, models.get_spec(case.model).metadata(), LIMIT)
    except v2.V2Error:
        return False
    rid = case.headers.get("X-Request-ID", "").strip()
    return not server.startswith("dispatcher") or len(rid) <= 256 and rid.isprintable()


def check_answer(server: str, case: Case, status: int, ctype: str, raw: bytes) -> None:
    """A 4xx with a JSON ``{"error": "..."}``, or a 200 where the request is in fact valid."""
    where = f"{server} {case.what} {case.path} {case.headers} {case.body[:300]!r}"
    assert status < 500, f"{status} {raw[:300]!r} for {where}"
    if status == 200:
        assert case.maybe_valid and oracle(server, case), f"200 for a malformed request: {where}"
        return
    assert 400 <= status < 500, f"{status} for {where}"
    assert ctype == "application/json", f"{status} {ctype} {raw[:200]!r} for {where}"
    doc = orjson.loads(raw)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], f"{doc!r} for {where}"


def _no_errors_logged(caplog, capsys) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors[:5]]
    if capsys is None:
        return
    err = capsys.readouterr().err
    assert "Traceback" not in err and "validation let through" not in err, err[-2000:]


TARGETS = {
    "onnx": (lambda m: "onnx", models.MODEL_NAMES),
    "emulated": (lambda m: f"emulated-{m}", models.MODEL_NAMES),
    "dispatcher": (lambda m: f"dispatcher-{m}", DISPATCHED),
}


@pytest.mark.parametrize("server", sorted(TARGETS))
def test_malformed_requests_are_4xx_with_a_json_error(served, server, caplog, capsys):
    """Over a thousand malformed requests: each a 4xx JSON error (or a 200 when the oracle finds it valid)."""
    caplog.set_level(logging.WARNING)
    client_of, names = TARGETS[server]
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()

    @seed(zlib.crc32(server.encode()))
    @settings(FUZZ, max_examples=EXAMPLES)
    @given(case=cases(names))
    def check(case: Case) -> None:
        status, ctype, raw = served.post(client_of(case.model), case)
        sent[case.what] += 1
        statuses[status] += 1
        check_answer(server, case, status, ctype, raw)

    check()
    assert sum(sent.values()) >= 1000, sent
    kinds = {w.split(":")[0] for w in sent}
    assert kinds == {"json", "binary", "raw", "url", "encoding"}, sent
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) >= 900, statuses
    _no_errors_logged(caplog, capsys)


# -- header bytes on the wire ----------------------------------------------------------------------------------------
CTL = set(range(0x20)) - {0x09} | {0x7F}  # what aiohttp's HTTP parser refuses in a header value (tab aside)
WIRE_HEADERS = (b"X-Request-ID", b"Content-Type", v2.HEADER_LENGTH.encode(), b"Content-Encoding", b"X-Other")


def http_request(path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """One HTTP/1.1 request as bytes (header values need not be text), asking the server to close after it."""
    head = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n".encode()
        + head
        + b"\r\n"
        + body
    )


def http_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def wire_ok(server: str, name: bytes, value: bytes, header_length: int) -> bool:
    """Whether a valid request with header ``name: value`` added (or replacing) is still valid for ``server``."""
    text = value.decode("utf-8", "surrogateescape").strip(" \t")  # what aiohttp hands the app
    if name == b"X-Request-ID":
        return not server.startswith("dispatcher") or not text or (len(text) <= 256 and text.isprintable())
    if name == v2.HEADER_LENGTH.encode():
        return _int_or_none(text) == header_length
    if name == b"Content-Encoding":
        return text.lower() in ("", "identity")
    return True


@pytest.mark.parametrize("server", ["onnx", "emulated-rm2", "dispatcher-rm2"])
def test_header_bytes_on_the_wire(served, server, caplog):
    """Any bytes (control characters aside) in X-Request-ID, Content-Type, the header length, Content-Encoding: a 200
    where the request is still valid, else a 4xx JSON error; never a 5xx."""
    caplog.set_level(logging.WARNING)
    enc = v2.encode_infer_request(_inputs("rm2", 2, 0))
    hl = int(enc.headers[v2.HEADER_LENGTH])
    sent: Counter[int] = Counter()

    @seed(zlib.crc32(server.encode()))
    @settings(FUZZ, max_examples=150)
    @given(
        name=st.sampled_from(WIRE_HEADERS),
        value=st.binary(max_size=300).filter(lambda b: not CTL & set(b)),
    )
    def check(name: bytes, value: bytes) -> None:
        headers = [(k.encode(), v.encode()) for k, v in enc.headers.items() if k.encode().lower() != name.lower()]
        raw = served.wire(server, http_request("/v2/models/rm2/infer", [*headers, (name, value)], enc.body))
        status, headers_back, body = http_answer(raw)
        sent[status] += 1
        where = f"{server} {name!r}: {value!r}: {status} {body[:200]!r}"
        if wire_ok(server, name, value, hl):
            assert status == 200, where
            return
        assert 400 <= status < 500 and headers_back.get("content-type") == "application/json", where
        assert isinstance(orjson.loads(body).get("error"), str), where

    check()
    assert sum(sent.values()) >= 150 and set(sent) - {200}, sent
    _no_errors_logged(caplog, None)


@pytest.mark.parametrize(
    "what, request_bytes",
    [
        ("control byte in a header", http_request("/v2/models/rm2/infer", [(b"X-Request-ID", b"a\x01b")], b"{}")),
        ("NUL in a header", http_request("/v2/models/rm2/infer", [(b"Content-Type", b"\x00")], b"{}")),
        ("negative Content-Length", b"POST /v2/models/rm2/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        (
            "Content-Length not a number",
            b"POST /v2/models/rm2/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
        ),
        ("two Content-Lengths", b"POST /v2/models/rm2/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n{}"),
        ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40))),
    ],
)
@pytest.mark.parametrize("server", ["onnx", "emulated-rm2", "dispatcher-rm2"])
def test_what_the_http_parser_refuses_is_a_400_and_the_server_serves_on(served, server, what, request_bytes):
    """Bytes that are not HTTP never reach the app: aiohttp's parser answers 400 (in plain text, and logs it), and
    the server goes on serving. The app-level promise (JSON errors) starts where HTTP parses."""
    raw = served.wire(server, request_bytes)
    assert http_answer(raw)[0] == 400, (what, raw[:200])
    enc = v2.encode_infer_request(_inputs("rm2", 2, 0))
    assert served.post(server, Case("rm2", "/v2/models/rm2/infer", enc.body, dict(enc.headers), "valid"))[0] == 200


@pytest.mark.parametrize("server", ["onnx", "emulated-rm2", "dispatcher-rm2"])
def test_a_body_shorter_than_its_content_length_breaks_nothing(served, server, caplog):
    """A client that declares more bytes than it sends, then stops: nothing to answer, no error logged, and the
    server goes on serving; a chunked body cut short likewise."""
    caplog.set_level(logging.WARNING)
    enc = v2.encode_infer_request(_inputs("rm2", 2, 0))
    hl = (v2.HEADER_LENGTH.encode(), enc.headers[v2.HEADER_LENGTH].encode())
    longer = http_request("/v2/models/rm2/infer", [hl], enc.body).replace(
        f"Content-Length: {len(enc.body)}".encode(), f"Content-Length: {len(enc.body) + 50}".encode()
    )
    chunked = (
        b"POST /v2/models/rm2/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + hl[0]
        + b": "
        + hl[1]
        + b"\r\n\r\nfff\r\n"
        + enc.body[:100]
    )
    for data in (longer, chunked):
        assert served.wire(server, data, half_close=True) == b""
        assert served.post(server, Case("rm2", "/v2/models/rm2/infer", enc.body, dict(enc.headers), "valid"))[0] == 200
    _no_errors_logged(caplog, None)
