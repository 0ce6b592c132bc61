"""DeepRecSys-style recommendation models built as ONNX graphs with seeded random weights (nothing downloaded).

Models: ``ncf`` (NeuMF: GMF + MLP over user/item embeddings), ``rm2`` (DLRM-style: bottom MLP, eight multi-hot
embedding tables, pairwise-dot interaction, top MLP, sigmoid), ``wnd`` (wide & deep), ``mtwnd`` (multi-task wide &
deep, one ``[B, 4]`` output), ``dien`` (DIEN-like: GRU + target attention over a behaviour sequence).

Each model is defined once, as a function over a small graph builder. Run in *counting* mode the same function yields
the ``ModelSpec`` (inputs, outputs, parameter count, FLOPs per sample) without importing ``onnx``; run in *emit* mode
it yields the ONNX graph. FLOPs count multiply and add separately (a dense layer ``i -> o`` is ``2*i*o``), include
embedding pooling, the GRU's gate matmuls and the attention/interaction dot products, and ignore bias adds,
activations and gathers (memory traffic, not arithmetic).

The batch is the first, dynamic dimension of every input and output.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import InputError
from servers import v2

BUILDER_VERSION = 1
OPSET = 17
IR_VERSION = 9
SPEC_HASH_KEY = "kairos_spec_hash"
MODEL_DIR_ENV = "KAIROS_MODEL_DIR"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, V2 datatype, per-sample shape (batch excluded); ``high`` bounds integer ids."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    high: int | None = None
    description: str = ""

    def v2_meta(self) -> v2.TensorMeta:
        """The V2 metadata form, with -1 for the batch dimension and ``high`` (the id range servers enforce)."""
        return v2.TensorMeta(self.name, self.datatype, (-1, *self.shape), self.high)


@dataclass(frozen=True)
class ModelSpec:
    """What a model takes and returns, its size and cost; the hash covers everything that shapes the file."""

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    params: int
    flops_per_sample: int
    hyper: tuple[tuple[str, int], ...] = ()

    def spec_hash(self, seed: int = 0) -> str:
        """A short hash of the spec, the builder version and the seed (a built file is reused only if it matches)."""
        blob = json.dumps(
            {"spec": asdict(self), "seed": int(seed), "builder": BUILDER_VERSION, "opset": OPSET},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def metadata(self, platform: str = "onnxruntime_onnx") -> v2.ModelMetadata:
        """The V2 model metadata served for this model."""
        return v2.ModelMetadata(
            name=self.name,
            platform=platform,
            inputs=tuple(t.v2_meta() for t in self.inputs),
            outputs=tuple(t.v2_meta() for t in self.outputs),
        )


# -- the graph builder ------------------------------------------------------------------------------------------
class _Graph:
    """Counts parameters and FLOPs; with a Generator, also emits ONNX nodes and seeded initializers."""

    def __init__(self, rng: np.random.Generator | None):
        self.rng = rng
        self.emit = rng is not None
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.params = 0
        self.flops = 0
        self._count = 0
        if self.emit:
            import onnx  # noqa: F401  (imported only when a file is actually built)
            from onnx import helper, numpy_helper

            self._helper, self._numpy_helper = helper, numpy_helper

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, spec: TensorSpec) -> str:
        """Declare a graph input."""
        self.inputs.append(spec)
        return spec.name

    def output(self, x: str, spec: TensorSpec) -> None:
        """Declare a graph output computed as ``x`` (an Identity names it)."""
        self.outputs.append(spec)
        self.op("Identity", [x], out=spec.name)

    def weight(self, prefix: str, shape: tuple[int, ...], init: str, scale: float) -> str:
        """A trainable tensor (counted in ``params``); ``init`` is ``normal``, ``uniform`` or ``zeros``."""
        self.params += int(np.prod(shape))
        name = self._name(prefix)
        if self.emit:
            if init == "normal":
                arr = self.rng.normal(0.0, scale, size=shape)
            elif init == "uniform":
                arr = self.rng.uniform(-scale, scale, size=shape)
            else:
                arr = np.zeros(shape)
            self.inits.append(self._numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def const(self, prefix: str, value) -> str:
        """A constant (indices, axes): not a parameter."""
        name = self._name(prefix)
        if self.emit:
            self.inits.append(self._numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], *, flops: int = 0, out: str | None = None, n_out: int = 1, **attrs):
        """One node; returns its output name (or names when ``n_out > 1``)."""
        self.flops += int(flops)
        outs = [out] if out else [self._name(op_type.lower()) for _ in range(n_out)]
        if self.emit:
            self.nodes.append(self._helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- layers ---------------------------------------------------------------------------------------------
    def dense(self, x: str, i: int, o: int, act: str | None = "relu") -> str:
        """A fully connected layer ``[B, i] -> [B, o]`` (Gemm) with an optional Relu/Sigmoid."""
        w = self.weight("w", (i, o), "normal", float(np.sqrt(2.0 / (i + o))))
        b = self.weight("b", (o,), "zeros", 0.0)
        y = self.op("Gemm", [x, w, b], flops=2 * i * o)
        if act == "relu":
            y = self.op("Relu", [y])
        elif act == "sigmoid":
            y = self.op("Sigmoid", [y])
        return y

    def mlp(self, x: str, dims: list[int], last_act: str | None = "relu") -> str:
        """Dense layers through ``dims`` (``dims[0]`` is the input width)."""
        for k in range(len(dims) - 1):
            x = self.dense(x, dims[k], dims[k + 1], act="relu" if k < len(dims) - 2 else last_act)
        return x

    def table(self, rows: int, dim: int) -> str:
        """An embedding table ``[rows, dim]``."""
        return self.weight("emb", (rows, dim), "uniform", 0.05)

    def lookup(self, table: str, ids: str, dim: int, lookups: int) -> str:
        """Gather ``ids [B, L]`` from ``table`` and sum-pool to ``[B, dim]``."""
        g = self.op("Gather", [table, ids])
        if lookups == 1:
            return self.op("Flatten", [g], axis=1)
        return self.op(
            "ReduceSum", [g, self.const("axes", np.array([1], np.int64))], flops=(lookups - 1) * dim, keepdims=0
        )

    def column(self, x: str, j: int, keep: bool) -> str:
        """Column ``j`` of ``x [B, n, ...]``: ``[B, 1, ...]`` if ``keep`` else ``[B, ...]``."""
        idx = self.const("col", np.array([j] if keep else j, np.int64))
        return self.op("Gather", [x, idx], axis=1)

    def concat(self, xs: list[str], axis: int = 1) -> str:
        """Concatenate along ``axis``."""
        return self.op("Concat", xs, axis=axis)


def _ids(name: str, n: int, high: int, what: str) -> TensorSpec:
    return TensorSpec(name, "INT64", (n,), high, what)


# -- the models -------------------------------------------------------------------------------------------------
def _ncf(g: _Graph) -> None:
    rows, dim, mlp = 10_000, 32, [64, 64, 32, 16]
    user = g.input(_ids("user", 1, rows, "user id"))
    item = g.input(_ids("item", 1, rows, "item id"))
    gmf = g.op(
        "Mul", [g.lookup(g.table(rows, dim), user, dim, 1), g.lookup(g.table(rows, dim), item, dim, 1)], flops=dim
    )
    deep = g.concat([g.lookup(g.table(rows, dim), user, dim, 1), g.lookup(g.table(rows, dim), item, dim, 1)])
    deep = g.mlp(deep, mlp)
    y = g.dense(g.concat([gmf, deep]), dim + mlp[-1], 1, act="sigmoid")
    g.output(y, TensorSpec("prob", "FP32", (1,), description="click probability"))


def _rm2(g: _Graph) -> None:
    tables, rows, dim, lookups, n_dense = 8, 10_000, 32, 8, 13
    dense = g.input(TensorSpec("dense", "FP32", (n_dense,), description="continuous features"))
    sparse = g.input(
        TensorSpec(
            "sparse", "INT64", (tables, lookups), rows, f"{lookups} ids per table for {tables} tables (sum-pooled)"
        )
    )
    bottom = g.mlp(dense, [n_dense, 128, 64, dim])
    vecs = [bottom] + [
        g.lookup(g.table(rows, dim), g.column(sparse, t, keep=False), dim, lookups) for t in range(tables)
    ]
    n = len(vecs)
    stack = g.concat([g.op("Unsqueeze", [v, g.const("axes", np.array([1], np.int64))]) for v in vecs])  # [B,n,d]
    z = g.op("MatMul", [stack, g.op("Transpose", [stack], perm=[0, 2, 1])], flops=2 * n * n * dim)  # [B,n,n]
    iu = np.array([i * n + j for i in range(n) for j in range(i + 1, n)], np.int64)
    pairs = g.op("Gather", [g.op("Flatten", [z], axis=1), g.const("triu", iu)], axis=1)  # [B, n(n-1)/2]
    top = g.mlp(g.concat([bottom, pairs]), [dim + len(iu), 128, 64, 1], last_act="sigmoid")
    g.output(top, TensorSpec("prob", "FP32", (1,), description="click probability"))


def _wide_and_deep(g: _Graph, tasks: int) -> None:
    fields, rows, dim, n_dense, n_wide, wide_rows = 8, 10_000, 32, 13, 8, 100_000
    dense = g.input(TensorSpec("dense", "FP32", (n_dense,), description="continuous features"))
    sparse = g.input(_ids("sparse", fields, rows, f"one id per categorical field ({fields} fields)"))
    wide_ids = g.input(_ids("wide", n_wide, wide_rows, f"{n_wide} hashed cross-feature ids"))
    wide_w = g.weight("wide", (wide_rows, 1), "uniform", 0.05)
    wide = g.op(
        "ReduceSum",
        [g.op("Flatten", [g.op("Gather", [wide_w, wide_ids])], axis=1), g.const("axes", np.array([1], np.int64))],
        flops=n_wide - 1,
        keepdims=1,
    )  # [B,1]
    embs = [g.lookup(g.table(rows, dim), g.column(sparse, f, keep=True), dim, 1) for f in range(fields)]
    width = fields * dim + n_dense
    trunk = g.mlp(g.concat(embs + [dense]), [width, 256, 128] if tasks > 1 else [width, 256, 128, 64])
    if tasks == 1:
        logit = g.dense(trunk, 64, 1, act=None)
        y = g.op("Sigmoid", [g.op("Add", [logit, wide], flops=1)])
        g.output(y, TensorSpec("prob", "FP32", (1,), description="click probability"))
        return
    heads = [g.dense(g.dense(trunk, 128, 64), 64, 1, act=None) for _ in range(tasks)]
    y = g.op("Sigmoid", [g.op("Add", [g.concat(heads), wide], flops=tasks)])
    g.output(y, TensorSpec("probs", "FP32", (tasks,), description=f"one probability per task ({tasks} tasks)"))


def _wnd(g: _Graph) -> None:
    _wide_and_deep(g, tasks=1)


def _mtwnd(g: _Graph) -> None:
    _wide_and_deep(g, tasks=4)


def _dien(g: _Graph) -> None:
    rows, dim, seq, hidden = 10_000, 32, 20, 32
    history = g.input(_ids("history", seq, rows, f"the user's last {seq} item ids, oldest first"))
    target = g.input(_ids("target", 1, rows, "candidate item id"))
    user = g.input(_ids("user", 1, rows, "user id"))
    items = g.table(rows, dim)
    hist = g.op("Transpose", [g.op("Gather", [items, history])], perm=[1, 0, 2])  # [S,B,D]
    w = g.weight("gru_w", (1, 3 * hidden, dim), "normal", float(np.sqrt(1.0 / dim)))
    r = g.weight("gru_r", (1, 3 * hidden, hidden), "normal", float(np.sqrt(1.0 / hidden)))
    b = g.weight("gru_b", (1, 6 * hidden), "zeros", 0.0)
    y, y_h = g.op("GRU", [hist, w, r, b], n_out=2, hidden_size=hidden, flops=seq * 2 * 3 * hidden * (dim + hidden))
    states = g.op(
        "Transpose", [g.op("Squeeze", [y, g.const("axes", np.array([1], np.int64))])], perm=[1, 0, 2]
    )  # [B,S,H]
    last = g.op("Squeeze", [y_h, g.const("axes", np.array([0], np.int64))])  # [B,H]
    tgt = g.lookup(items, target, dim, 1)  # [B,D]; hidden == dim so it can query the states
    scores = g.op(
        "MatMul", [states, g.op("Unsqueeze", [tgt, g.const("axes", np.array([2], np.int64))])], flops=2 * seq * hidden
    )  # [B,S,1]
    att = g.op("Softmax", [scores], axis=1)
    pooled = g.op(
        "ReduceSum",
        [g.op("Mul", [states, att], flops=seq * hidden), g.const("axes", np.array([1], np.int64))],
        flops=(seq - 1) * hidden,
        keepdims=0,
    )
    usr = g.lookup(g.table(rows, dim), user, dim, 1)
    y = g.mlp(g.concat([usr, tgt, pooled, last]), [2 * dim + 2 * hidden, 128, 64, 1], last_act="sigmoid")
    g.output(y, TensorSpec("prob", "FP32", (1,), description="click probability"))


_DEFINITIONS: dict[str, tuple[Callable[[_Graph], None], str]] = {
    "ncf": (_ncf, "NeuMF: GMF (elementwise user x item) + MLP over user/item embeddings"),
    "rm2": (_rm2, "DLRM-style: bottom MLP, 8 multi-hot tables (8 ids each, sum-pooled), pairwise dots, top MLP"),
    "wnd": (_wnd, "Wide & deep: hashed wide cross features + deep MLP over 8 field embeddings and dense features"),
    "mtwnd": (_mtwnd, "Multi-task wide & deep: shared deep trunk, 4 task heads, one [B, 4] output"),
    "dien": (_dien, "DIEN-like: GRU over a 20-item behaviour sequence, attention by the target item, MLP"),
}
MODEL_NAMES: tuple[str, ...] = tuple(_DEFINITIONS)
_SPECS: dict[str, ModelSpec] = {}


def get_spec(name: str) -> ModelSpec:
    """The spec of a named model (computed without building it); InputError naming the known models."""
    if name not in _DEFINITIONS:
        raise InputError(f"unknown model {name!r} (known: {', '.join(MODEL_NAMES)})")
    if name not in _SPECS:
        g = _Graph(None)
        _DEFINITIONS[name][0](g)
        _SPECS[name] = ModelSpec(
            name=name,
            description=_DEFINITIONS[name][1],
            inputs=tuple(g.inputs),
            outputs=tuple(g.outputs),
            params=g.params,
            flops_per_sample=g.flops,
        )
    return _SPECS[name]


def default_model_dir() -> Path:
    """``$KAIROS_MODEL_DIR``, else ``$XDG_CACHE_HOME/kairos-harness/models`` (``~/.cache/...``)."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "kairos-harness" / "models"


def model_path(name: str, out_dir: str | Path | None = None) -> Path:
    """Where ``build_model`` puts (or finds) a model's file."""
    return Path(out_dir or default_model_dir()) / f"{name}.onnx"


def _onnx_type(datatype: str) -> int:
    from onnx import TensorProto

    return {"FP32": TensorProto.FLOAT, "INT64": TensorProto.INT64, "INT32": TensorProto.INT32}[datatype]


def to_onnx(name: str, seed: int = 0):
    """Build the ``onnx.ModelProto`` of a named model with weights drawn from ``Generator(seed)``."""
    from onnx import checker, helper

    spec = get_spec(name)
    g = _Graph(np.random.default_rng(seed))
    _DEFINITIONS[name][0](g)

    def vi(t: TensorSpec):
        return helper.make_tensor_value_info(t.name, _onnx_type(t.datatype), ["batch", *t.shape])

    graph = helper.make_graph(g.nodes, name, [vi(t) for t in g.inputs], [vi(t) for t in g.outputs], initializer=g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kairos-harness",
        doc_string=spec.description,
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {SPEC_HASH_KEY: spec.spec_hash(seed), "seed": str(seed)})
    checker.check_model(model)
    return model


def built_hash(path: str | Path) -> str | None:
    """The spec hash recorded in a built file, or None if unreadable/absent."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    return next((p.value for p in model.metadata_props if p.key == SPEC_HASH_KEY), None)


def build_model(name: str, out_dir: str | Path | None = None, seed: int = 0, *, force: bool = False) -> Path:
    """Write ``<out_dir>/<name>.onnx`` unless a file with the same spec hash exists; returns its path."""
    spec = get_spec(name)
    path = model_path(name, out_dir)
    if not force and path.exists() and built_hash(path) == spec.spec_hash(seed):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path.parent}: cannot create model directory ({exc})") from None
    data = to_onnx(name, seed).SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)  # atomic: concurrent builders
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_inputs(spec: ModelSpec, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Valid random inputs for ``batch_size`` samples: ids uniform in ``[0, high)``, floats standard normal."""
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    out: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        shape = (batch_size, *t.shape)
        if t.high is not None:
            out[t.name] = rng.integers(0, t.high, size=shape, dtype=np.int64).astype(v2.numpy_dtype(t.datatype))
        else:
            out[t.name] = rng.standard_normal(shape, dtype=np.float32).astype(v2.numpy_dtype(t.datatype))
    return out


def markdown_table() -> str:
    """A Markdown summary of every model's inputs, outputs, parameters and FLOPs per sample."""
    lines = [
        "| model | inputs (per sample) | outputs (per sample) | parameters | FLOPs per sample |",
        "|---|---|---|---:|---:|",
    ]
    for name in MODEL_NAMES:
        s = get_spec(name)
        ins = "<br>".join(
            f"`{t.name}` {t.datatype} {list(t.shape)}" + (f" ids in [0, {t.high})" if t.high else "") for t in s.inputs
        )
        outs = "<br>".join(f"`{t.name}` {t.datatype} {list(t.shape)}" for t in s.outputs)
        lines.append(f"| `{name}` | {ins} | {outs} | {s.params:,} | {s.flops_per_sample:,} |")
    return "\n".join(lines)
