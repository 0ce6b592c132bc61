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


def test_metadata_carries_the_id_range_but_publishes_only_the_protocol_fields():
    dense, sparse = META.inputs
    assert (dense.high, sparse.high) == (None, 10_000)
    assert sparse.to_json() == {"name": "sparse", "datatype": "INT64", "shape": [-1, 8, 8]}
    assert META.to_json()["inputs"][1] == sparse.to_json()
    assert models.get_spec("wnd").metadata().inputs[2].high == 100_000


def _parsed(x, binary=True):
    enc = v2.encode_infer_request(x, binary=binary)
    return v2.parse_infer_request(enc.body, enc.headers.get(v2.HEADER_LENGTH))


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("where", [0, 77, -1])
@pytest.mark.parametrize("value", [-1, 10_000, 10_001, 2**62, np.iinfo(np.int64).min, np.iinfo(np.int64).max])
def test_ids_outside_the_table_are_400_naming_input_value_and_range(value, where, binary):
    x = _inputs(4)
    x["sparse"].reshape(-1)[where] = value
    with pytest.raises(V2Error) as err:
        v2.validate_request(_parsed(x, binary), META, 1000)
    assert err.value.status == 400
    assert err.value.message == f"input 'sparse': id {value} outside 0..9999 for model 'rm2'"


def test_ids_at_both_ends_of_the_table_are_valid():
    for value in (0, 9_999):
        x = _inputs(4)
        x["sparse"][:] = value
        assert v2.validate_request(_parsed(x), META, 1000) == 4


def test_the_smallest_offending_id_is_named_when_both_ends_are_out():
    x = _inputs(4)
    x["sparse"].reshape(-1)[:2] = (10_000, -5)
    with pytest.raises(V2Error, match="id -5 outside"):
        v2.validate_request(_parsed(x), META, 1000)


@pytest.mark.parametrize("datatype", ["INT8", "INT32", "UINT8", "UINT16", "UINT64"])
def test_id_range_of_any_integer_datatype(datatype):
    meta = v2.ModelMetadata("m", "x", inputs=(v2.TensorMeta("ids", datatype, (-1, 3), high=100),), outputs=())
    dt = v2.numpy_dtype(datatype)
    ok = np.array([[0, 50, 99]], dt)
    assert v2.validate_request(_parsed({"ids": ok}), meta) == 1
    bad = [100, 101] + ([-1] if dt.kind == "i" else [np.iinfo(dt).max])
    for value in bad:
        x = ok.copy()
        x[0, 1] = value
        with pytest.raises(V2Error, match=f"^input 'ids': id {value} outside 0..99 for model 'm'$"):
            v2.validate_request(_parsed({"ids": x}), meta)


def test_range_skips_floats_and_empty_ids():
    meta = v2.ModelMetadata(
        "m",
        "x",
        inputs=(v2.TensorMeta("f", "FP32", (-1, 2), high=1), v2.TensorMeta("ids", "INT64", (-1, 0), high=1)),
        outputs=(),
    )
    x = {"f": np.array([[5.0, np.nan], [-3.0, np.inf]], np.float32), "ids": np.zeros((2, 0), np.int64)}
    assert v2.validate_request(_parsed(x), meta) == 2


def test_batch_0_is_reported_before_any_id_range():
    x = {k: a[:0] for k, a in _inputs(2).items()}
    with pytest.raises(V2Error, match="batch size 0"):
        v2.validate_request(_parsed(x), META, 1000)


@pytest.mark.parametrize(
    "shape, binary, match",
    [
        ([0, 2**40, 2**40, 2**40], False, "cannot be represented"),
        ([0, 2**40, 2**40, 2**40], True, "cannot be represented"),
        ([0, 2**63 - 1, 2**63 - 1], False, "cannot be represented"),
        ([0] * 33, False, "33 dimensions, at most 32"),
        ([1] * 33, True, "33 dimensions, at most 32"),
    ],
)
def test_shapes_numpy_cannot_hold_are_400(shape, binary, match):
    item = {"name": "dense", "datatype": "FP32", "shape": shape}
    if binary:
        item["parameters"] = {"binary_data_size": 0 if 0 in shape else 4}
        head = orjson.dumps({"inputs": [item]})
        body, header = head + (b"" if 0 in shape else b"\0" * 4), len(head)
    else:
        item["data"] = [] if 0 in shape else [0.0]
        body, header = orjson.dumps({"inputs": [item]}), None
    with pytest.raises(V2Error, match=match) as err:
        v2.parse_infer_request(body, header)
    assert err.value.status == 400


@pytest.mark.parametrize("batch", [1, 7, 1000])
@pytest.mark.parametrize("model", ["rm2", "wnd", "ncf"])
def test_peek_batch_reads_a_json_head_as_the_full_parse_does(model, batch):
    enc = v2.encode_infer_request(
        models.make_inputs(models.get_spec(model), batch, np.random.default_rng(1)), binary=False
    )
    assert v2._JSON_HEAD.match(enc.body, 0, v2.JSON_HEAD_BYTES) is not None  # the encoder's JSON takes the short way
    assert (
        v2.peek_batch(enc.body, None)
        == batch
        == next(iter(v2.parse_infer_request(enc.body, None).inputs.values())).shape[0]
    )


@pytest.mark.parametrize(
    "body, batch, short",
    [
        (b'{"inputs":[{"name":"x","shape":[7,2],"data":[1]}]}', 7, True),
        (b' { "id" : "a", "parameters": {"k": 1, "s": "v"}, "inputs": [ { "shape" : [ 3 ] } ] }', 3, True),
        (b'{"inputs":[{"datatype":"FP32","name":"x","shape":[12],"data":[]}]}', 12, True),
        # Orders and contents the head does not cover are parsed in full, with the same answer.
        (b'{"parameters":{"inputs":[{"shape":[3]}]},"inputs":[{"shape":[4]}]}', 4, False),
        (b'{"inputs":[{"data":[1,2],"shape":[2]}]}', 2, False),
        (b'{"inputs":[{"name":"a\\"b","shape":[5]}]}', 5, False),
        (b'{"outputs":[{"name":"p"}],"inputs":[{"shape":[6]}]}', 6, False),
        (b'{"parameters":{"pad":"' + b"x" * v2.JSON_HEAD_BYTES + b'"},"inputs":[{"shape":[8]}]}', 8, False),
    ],
)
def test_peek_batch_short_way_or_full_parse(body, batch, short):
    assert (v2._JSON_HEAD.match(body, 0, v2.JSON_HEAD_BYTES) is not None) == short
    assert v2.peek_batch(body, None) == batch


@pytest.mark.parametrize(
    "body, match",
    [
        (b'{"inputs":[{"shape":[0]}]}', "batch size >= 1"),
        (b'{"inputs":[{"shape":[2.5]}]}', "batch size >= 1"),
        (b'{"inputs":[{"shape":[-1]}]}', "batch size >= 1"),
        (b'{"inputs":[{"shape":[3', "malformed JSON"),
    ],
)
def test_peek_batch_bad_heads_still_400(body, match):
    with pytest.raises(V2Error, match=match):
        v2.peek_batch(body, None)
