"""The V2 codec: JSON and binary requests/responses, validation errors with the right status."""

import numpy as np
import orjson
import pytest

from servers import models, v2, v2_http
from servers.v2 import V2Error

META = models.get_spec("rm2").metadata()


def _inputs(batch=4, seed=0):
    return models.make_inputs(models.get_spec("rm2"), batch, np.random.default_rng(seed))


@pytest.mark.parametrize("binary", [True, False])
def test_request_round_trip(binary):
    x = _inputs(5)
    enc = v2.encode_infer_request(x, binary=binary, request_id="q1")
    assert enc.batch_size == 5
    assert (v2.HEADER_LENGTH in enc.headers) == binary
    req = v2.parse_infer_request(enc.body, enc.headers.get(v2.HEADER_LENGTH))
    assert req.id == "q1" and req.binary_output is True
    assert list(req.inputs) == ["dense", "sparse"]
    for k in x:
        assert req.inputs[k].dtype == x[k].dtype
        np.testing.assert_array_equal(req.inputs[k], x[k])
    assert v2.validate_request(req, META, 1000) == 5


def test_nested_json_data_and_datatypes():
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "dense", "datatype": "FP32", "shape": [1, 13], "data": [[0.5] * 13]},
                {"name": "sparse", "datatype": "INT64", "shape": [1, 8, 8], "data": list(range(64))},
            ]
        }
    )
    req = v2.parse_infer_request(body)
    assert req.inputs["dense"].dtype == np.float32 and req.inputs["sparse"].shape == (1, 8, 8)
    assert v2.validate_request(req, META) == 1
    for name, dt in [("INT32", np.int32), ("FP64", np.float64), ("UINT8", np.uint8), ("BOOL", np.bool_)]:
        assert v2.numpy_dtype(name) == np.dtype(dt)
        assert v2.v2_datatype(dt) == name


@pytest.mark.parametrize("binary_output", [True, False])
def test_response_round_trip(binary_output):
    req = v2.InferRequest(inputs={}, id="7", binary_output=binary_output)
    out = {"prob": np.arange(6, dtype=np.float32).reshape(6, 1)}
    body, headers = v2.encode_infer_response("rm2", out, req, {"queue_ms": 1.5, "compute_ms": 2.5})
    assert (v2.HEADER_LENGTH in headers) == binary_output
    resp = v2.decode_infer_response(body, headers)
    assert resp.id == "7" and resp.model_name == "rm2"
    assert resp.parameters == {"queue_ms": 1.5, "compute_ms": 2.5}
    np.testing.assert_array_equal(resp.outputs["prob"], out["prob"])


def test_per_output_binary_flag_overrides_default():
    req = v2.InferRequest(inputs={}, outputs=(v2.RequestedOutput("a", True), v2.RequestedOutput("b", False)))
    out = {"a": np.ones((2, 1), np.float32), "b": np.zeros((2, 4), np.float32), "c": np.zeros((2, 1), np.float32)}
    body, headers = v2.encode_infer_response("m", out, req)
    hl = int(headers[v2.HEADER_LENGTH])
    head = orjson.loads(body[:hl])
    assert [o["name"] for o in head["outputs"]] == ["a", "b"]  # only the requested ones
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 8 and "data" not in head["outputs"][0]
    assert head["outputs"][1]["data"] == [0.0] * 8
    assert len(body) == hl + 8


def test_payload_cache_encodes_once_per_batch():
    calls = []

    def make(b):
        calls.append(b)
        return _inputs(b)

    cache = v2.PayloadCache(make)
    assert cache.get(10) is cache.get(10)
    cache.get(20)
    assert calls == [10, 20]


def _json(inputs, **extra):
    return orjson.dumps({"inputs": inputs, **extra})


GOOD_DENSE = {"name": "dense", "datatype": "FP32", "shape": [2, 13], "data": [0.0] * 26}
GOOD_SPARSE = {"name": "sparse", "datatype": "INT64", "shape": [2, 8, 8], "data": [1] * 128}


@pytest.mark.parametrize(
    "body, header, match",
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1, 2]", None, "JSON object"),
        (_json([]), None, "non-empty 'inputs'"),
        (_json([{"datatype": "FP32", "shape": [1], "data": [1]}]), None, "string 'name'"),
        (_json([dict(GOOD_DENSE, datatype="FP42")]), None, "unsupported datatype 'FP42'"),
        (_json([dict(GOOD_DENSE, shape=[2, -13])]), None, "'shape' must be a list of integers"),
        (_json([dict(GOOD_DENSE, data=[0.0] * 25)]), None, "has 25 elements"),
        (_json([dict(GOOD_DENSE, data=["x"] * 26)]), None, "not valid FP32"),
        (_json([GOOD_DENSE, GOOD_DENSE]), None, "given twice"),
        (_json([dict(GOOD_DENSE, data=None, parameters={"binary_data_size": 104})]), None, "without the"),
        (_json([dict(GOOD_DENSE, parameters={"binary_data_size": 104})]) + b"\0" * 10, "BAD", "not an integer"),
        (b"{}", 99, "exceeds the body length"),
    ],
)
def test_malformed_requests_are_400(body, header, match):
    if header == "BAD":
        header = "abc"
    with pytest.raises(V2Error, match=match) as err:
        v2.parse_infer_request(body, header)
    assert err.value.status == 400


def test_binary_size_mismatch_and_trailing_bytes():
    head = orjson.dumps(
        {"inputs": [{"name": "dense", "datatype": "FP32", "shape": [2, 13], "parameters": {"binary_data_size": 100}}]}
    )
    with pytest.raises(V2Error, match="runs past|does not match"):
        v2.parse_infer_request(head + b"\0" * 100, len(head))
    enc = v2.encode_infer_request(_inputs(2))
    with pytest.raises(V2Error, match="unclaimed"):
        v2.parse_infer_request(enc.body + b"xx", enc.headers[v2.HEADER_LENGTH])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda x: x.pop("sparse"), "missing input 'sparse'"),
        (lambda x: x.update(extra=np.zeros((4, 1), np.float32)), "unexpected input 'extra'"),
        (lambda x: x.update(dense=x["dense"].astype(np.float64)), "datatype FP64, model 'rm2' expects FP32"),
        (lambda x: x.update(sparse=x["sparse"].astype(np.int32)), "datatype INT32"),
        (lambda x: x.update(dense=np.zeros((4, 12), np.float32)), r"shape \[4, 12\], model 'rm2' expects \[-1, 13\]"),
        (lambda x: x.update(dense=np.zeros((4, 1, 13), np.float32)), "shape"),
        (lambda x: x.update(dense=np.zeros((3, 13), np.float32)), "disagree on the batch size"),
    ],
)
def test_validation_errors_are_400(change, match):
    x = _inputs(4)
    change(x)
    enc = v2.encode_infer_request(x)
    req = v2.parse_infer_request(enc.body, enc.headers[v2.HEADER_LENGTH])
    with pytest.raises(V2Error, match=match) as err:
        v2.validate_request(req, META, 1000)
    assert err.value.status == 400


def test_batch_limit_and_unknown_output():
    req = v2.parse_infer_request(
        v2.encode_infer_request(_inputs(11)).body, v2.encode_infer_request(_inputs(11)).headers[v2.HEADER_LENGTH]
    )
    with pytest.raises(V2Error, match="batch size 11 above this server's limit 10"):
        v2.validate_request(req, META, 10)
    req.outputs = (v2.RequestedOutput("nope"),)
    with pytest.raises(V2Error, match="unknown output 'nope'"):
        v2.validate_request(req, META, 100)


def test_permissive_metadata_accepts_any_inputs_with_a_batch():
    meta = v2.ModelMetadata("foo", "x", inputs=(), outputs=())
    req = v2.parse_infer_request(v2.encode_infer_request({"a": np.zeros((3, 2), np.float32)}, binary=False).body)
    assert v2.validate_request(req, meta) == 3


def test_max_body_bytes_fits_largest_json_batch():
    x = _inputs(1000)
    json_size = len(v2.encode_infer_request(x, binary=False).body)
    assert v2_http.max_body_bytes(META, 1000) > json_size
    assert v2_http.max_body_bytes(META, 1000) < 20 * json_size
