"""Fuzzing the pool-file reader: a bad pool file is an InputError naming the file, and a good one is usable.

``load_pool_file`` gets JSON documents that are valid but for one field, random JSON, JSON nested past Python's
recursion limit, numbers beyond a float, and bytes that are not UTF-8. The answer is an ``InputError`` naming the file,
or a ``PoolFile`` whose every URL the dispatcher can build its request URLs from (yarl, as it does), with prices
finite and >= 0 (or unknown), pids positive integers (or none) and ids unique.
"""

from __future__ import annotations

import json
import math
import zlib

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from yarl import URL

from harness.core.errors import InputError
from servers.pool_file import load_pool_file
from tests.core.test_fuzz_core_files import FUZZ, GARBAGE, NAME, read_or_input_error

PRICES = {"t.small": 0.1, "t.large": 0.4}
JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=12)
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
URLS = st.one_of(
    st.sampled_from(
        [
            "http://127.0.0.1:8000",
            "https://example.com/base/",
            "http://[::1]:9",
            "http://[::1",
            "http://h:99999",
            "http://h:-1",
            "http://h:x",
            "http:///x",
            "http://",
            "ftp://h",
            "http://a b",
            "http://h?x=1",
            "http://h#f",
            "http://h\x00",
            "http://user:pw@h:1",
            "//h:1",
            "http://é.example",
        ]
    ),
    st.text(max_size=20).map(lambda s: "http://" + s),
    JSON_SCALAR,
)


@st.composite
def instance(draw) -> dict:
    item = {"url": "http://127.0.0.1:8000", "instance_type": draw(st.sampled_from(sorted(PRICES)))}
    if draw(st.booleans()):
        item["id"] = draw(NAME)
    if draw(st.booleans()):
        item["usd_per_hour"] = draw(st.floats(0, 100))
    if draw(st.booleans()):
        item["pid"] = draw(st.integers(1, 2**22))
    return item


BROKEN_FIELDS = {
    "url": URLS,
    "instance_type": st.one_of(JSON_SCALAR, st.sampled_from(["", "  ", "a\x00b", "\n"])),
    "id": st.one_of(JSON_SCALAR, st.sampled_from(["", "\x07", "dup"])),
    "usd_per_hour": st.one_of(JSON_SCALAR, st.sampled_from([-1, 1e308 * 10, float("nan"), 10**400])),
    "pid": st.one_of(JSON_SCALAR, st.sampled_from([True, 0, -5, 2**40])),
}


@st.composite
def pool_document(draw) -> bytes:
    """A pool file as bytes: valid, one field broken, random JSON, or not JSON at all."""
    kind = draw(st.sampled_from(["valid", "field", "model", "top", "random", "deep", "encoding", "garbage"]))
    doc = {"model": "rm2", "instances": draw(st.lists(instance(), min_size=1, max_size=4))}
    if kind == "field":
        item = draw(st.sampled_from(doc["instances"]))
        name = draw(st.sampled_from(sorted(BROKEN_FIELDS)))
        item[name] = draw(BROKEN_FIELDS[name])
        if draw(st.booleans()):
            del item[draw(st.sampled_from(sorted(item)))]
    elif kind == "model":
        doc["model"] = draw(st.one_of(JSON_SCALAR, st.sampled_from(["", "a/b", "a b", "x?y", "m\x00", "%41"])))
    elif kind == "top":
        doc = draw(st.one_of(JSON_VALUE, st.fixed_dictionaries({"model": JSON_VALUE, "instances": JSON_VALUE})))
    elif kind == "random":
        return json.dumps(draw(JSON_VALUE)).encode()
    elif kind == "deep":
        n = draw(st.integers(500, 200_000))
        return draw(st.sampled_from([b"[" * n + b"]" * n, b'{"model": "rm2", "instances": ' + b"[" * n]))
    elif kind == "encoding":
        text = json.dumps(doc)
        return draw(
            st.sampled_from(
                [
                    text.encode("utf-16"),
                    "\ufeff".encode() + text.encode(),
                    text.replace('"rm2"', '"caf\\u00e9"').encode(),
                    text.encode()[:-1] + b"\xff}",
                ]
            )
        )
    elif kind == "garbage":
        return draw(GARBAGE)
    return json.dumps(doc, allow_nan=True).encode()


@seed(zlib.crc32(b"pool-file"))
@settings(FUZZ, max_examples=500)
@given(content=pool_document())
def test_a_pool_file_is_usable_or_an_input_error_naming_it(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "fuzz-pool.json"
    path.write_bytes(content)
    pool = read_or_input_error(lambda p: load_pool_file(p, prices=PRICES), path)
    if pool is None:
        return
    assert pool.model and pool.instances
    assert len({i.id for i in pool.instances}) == len(pool.instances)
    for inst in pool.instances:
        url = URL(f"{inst.url}/v2/models/{pool.model}/infer")  # as the dispatcher builds it
        assert url.scheme in ("http", "https") and url.host and url.path.endswith(f"/v2/models/{pool.model}/infer")
        assert inst.usd_per_hour is None or (math.isfinite(inst.usd_per_hour) and inst.usd_per_hour >= 0)
        assert inst.pid is None or (type(inst.pid) is int and inst.pid > 0)
        assert inst.id and inst.id.isprintable() and inst.instance_type and inst.instance_type.isprintable()


INSTANCE = '{"url": "http://127.0.0.1:1", "instance_type": "t.small"'


# What the fuzzing above found, each by the file that showed it (before: what came back instead).
@pytest.mark.parametrize(
    "content, needle",
    [
        (b"[" * 100_000, "not a JSON pool file"),  # RecursionError
        (f'{{"model": "m", "instances": [{INSTANCE}, "pid": 1{"0" * 5000}}}]}}'.encode(), "not a JSON pool file"),
        (f'{{"model": "m", "instances": [{INSTANCE}, "usd_per_hour": NaN}}]}}'.encode(), "'usd_per_hour' must be"),
        (f'{{"model": "m", "instances": [{INSTANCE}, "usd_per_hour": 1{"0" * 400}}}]}}'.encode(), "usd_per_hour"),
        (b'{"model": "m", "instances": [{"url": "http://[::1", "instance_type": "t"}]}', "field 'url' is not a URL"),
        (b'{"model": "m", "instances": [{"url": "http://h:99999", "instance_type": "t"}]}', "Port out of range"),
        (b'{"model": "m", "instances": [{"url": "http:///x", "instance_type": "t"}]}', "names no host"),
        (b'{"model": "m", "instances": [{"url": "http://a b", "instance_type": "t"}]}', "space or control"),
        (f'{{"model": "a/b", "instances": [{INSTANCE}}}]}}'.encode(), "is not a model name"),
    ],
)
def test_what_fuzzing_found_is_an_input_error_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "pool.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_pool_file(path, prices=PRICES)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value), str(err.value)


def test_a_bom_and_a_boolean_pid_are_read_as_meant(tmp_path):
    path = tmp_path / "pool.json"
    path.write_bytes(b"\xef\xbb\xbf" + f'{{"model": "m", "instances": [{INSTANCE}, "pid": true}}]}}'.encode())
    pool = load_pool_file(path, prices=PRICES)
    assert pool.instances[0].pid is None  # was True
