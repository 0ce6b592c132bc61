"""Built-in ONNX models: build, run in ONNX Runtime with the documented shapes, spec counts, caching, CLI, docs."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from harness.cli import main as kairos
from harness.cli.models import doc_text
from harness.core.errors import InputError
from servers import models

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_model_runs_with_documented_shapes(model_dir, name):
    spec = models.get_spec(name)
    sess = ort.InferenceSession(str(models.model_path(name, model_dir)), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [t.name for t in spec.inputs]
    assert [o.name for o in sess.get_outputs()] == [t.name for t in spec.outputs]
    for batch in (1, 37):
        feeds = models.make_inputs(spec, batch, np.random.default_rng(batch))
        for t in spec.inputs:
            assert feeds[t.name].shape == (batch, *t.shape)
            if t.high is not None:
                assert feeds[t.name].dtype == np.int64
                assert 0 <= feeds[t.name].min() and feeds[t.name].max() < t.high
        outs = sess.run(None, feeds)
        for arr, t in zip(outs, spec.outputs):
            assert arr.shape == (batch, *t.shape)
            assert arr.dtype == np.float32
            assert np.all(np.isfinite(arr)) and np.all((arr > 0) & (arr < 1))  # sigmoid outputs
        # different samples give different scores (the graph really uses its inputs)
        if batch > 1:
            assert np.unique(outs[0]).size > 1


def test_rm2_output_is_b_by_1(model_dir):
    spec = models.get_spec("rm2")
    assert [(t.name, t.datatype, t.shape) for t in spec.outputs] == [("prob", "FP32", (1,))]
    assert spec.metadata().outputs[0].shape == (-1, 1)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_param_count_matches_file(model_dir, name):
    m = onnx.load(str(models.model_path(name, model_dir)))
    floats = sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert floats == models.get_spec(name).params
    assert models.get_spec(name).flops_per_sample > 0


def test_flops_of_a_known_layer_stack():
    # ncf: GMF mul 32 + MLP 64->64->32->16 + final 48->1 (2*i*o each)
    expected = 32 + 2 * (64 * 64 + 64 * 32 + 32 * 16) + 2 * 48 * 1
    assert models.get_spec("ncf").flops_per_sample == expected


def test_build_is_cached_and_seeded(tmp_path):
    p = models.build_model("ncf", tmp_path, seed=3)
    stat = p.stat()
    assert models.build_model("ncf", tmp_path, seed=3) == p
    assert p.stat().st_mtime_ns == stat.st_mtime_ns and p.stat().st_ino == stat.st_ino  # not rewritten
    first = p.read_bytes()
    models.build_model("ncf", tmp_path, seed=4)  # another seed: rebuilt with other weights
    assert p.read_bytes() != first
    models.build_model("ncf", tmp_path, seed=3, force=True)
    assert p.read_bytes() == first  # same seed, same bytes
    p.write_bytes(b"garbage")  # a corrupt file is rebuilt
    models.build_model("ncf", tmp_path, seed=3)
    assert p.read_bytes() == first
    assert not list(tmp_path.glob(".*tmp"))


def test_unknown_model_is_input_error():
    with pytest.raises(InputError, match="unknown model 'bogus'.*rm2"):
        models.get_spec("bogus")


def test_default_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv(models.MODEL_DIR_ENV, str(tmp_path))
    assert models.default_model_dir() == tmp_path
    monkeypatch.delenv(models.MODEL_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert models.default_model_dir() == tmp_path / "c" / "kairos-harness" / "models"


def test_models_build_command(tmp_path, capsys):
    assert kairos(["models", "build", "--out", str(tmp_path), "--models", "ncf,dien"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["dien.onnx", "ncf.onnx"]
    assert kairos(["models", "build", "--out", str(tmp_path), "--models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_docs_are_generated_from_specs():
    assert (ROOT / "docs" / "models.md").read_text() == doc_text(), "regenerate: kairos models doc --out docs/models.md"
