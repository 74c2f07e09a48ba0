"""Shape-aware dispatch (backends/dispatch.py): one variant per input shape, against eager torch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import sparsec
from sparsec.backends.dispatch import DispatchLoaded, compile_dispatch
from sparsec.errors import ModelError, ParameterError, SerializationError
from sparsec.frontends.load import load_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "decoder_mlp.py"
D, H = 64, 128


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(D, H)
        self.down = nn.Linear(H, D)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


def _prune(w: torch.Tensor, sparsity: float) -> None:
    """Keep the largest |w| (80% zeros: dense wins at 1 token, a sparse format plausibly at 128)."""
    cut = w.abs().flatten().kthvalue(int(sparsity * w.numel())).values
    w.mul_((w.abs() > cut).to(w.dtype))


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    m = Block().eval()
    with torch.no_grad():
        _prune(m.up.weight, 0.8)
        _prune(m.down.weight, 0.8)
    inputs = [(torch.randn(128, D),), (torch.randn(1, D),)]      # prefill, decode
    return m, inputs


@pytest.fixture(scope="module")
def compiled(block):
    m, inputs = block
    return compile_dispatch(m, inputs)


@pytest.fixture(scope="module")
def saved(compiled, tmp_path_factory):
    return compiled.save(str(tmp_path_factory.mktemp("dispatch") / "block.sparsec"))


def _count_plan_runs(variants):
    """Wrap every variant's executor so each counts its own runs (independent of the dispatcher's counter)."""
    counts = [0] * len(variants)

    def wrap(i, ex):
        def run(*xs):
            counts[i] += 1
            return ex(*xs)
        return run

    for i, v in enumerate(variants):
        if hasattr(v, "executor"):               # loaded variant
            v.executor = wrap(i, v.executor)
        else:                                    # sparsec.api.Compiled: executor built on first call
            v._exec = wrap(i, v._exec if v._exec is not None else v.compiled.executor())
    return counts


def test_variants_match_eager_and_dispatch_by_shape(block, compiled):
    m, inputs = block
    counts = _count_plan_runs(compiled.variants)
    for i, x in enumerate(inputs):
        got = compiled(*x)[0]
        torch.testing.assert_close(got, m(*x).detach(), atol=1e-4, rtol=1e-4)
        assert compiled.last_variant == i
        plan_inputs = compiled.variants[i].compiled.plan["inputs"]
        assert [s["shape"] for s in plan_inputs] == [list(t.shape) for t in x]
    assert counts == [1, 1]
    compiled(*inputs[1])
    assert counts == [1, 2] and compiled.calls == [1, 2]
    y = compiled(inputs[1][0].numpy())[0]                       # numpy in, numpy out, same dispatch
    assert isinstance(y, np.ndarray) and compiled.last_variant == 1
    np.testing.assert_allclose(y, m(*inputs[1]).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_report_has_exact_choice_per_variant(block, compiled):
    m, inputs = block
    weights = {"up.weight": m.up.weight.detach(), "down.weight": m.down.weight.detach()}
    assert {r["weight"] for r in compiled.report} == set(weights)
    for r in compiled.report:
        assert len(r["variants"]) == len(inputs)
        assert [v["tokens"] for v in r["variants"]] == [128, 1]
        for vi, v in enumerate(r["variants"]):
            assert v["variant"] == vi and v["format"] != "groupquant"
            const = compiled.variants[vi].graph.constant(r["weight"])
            assert const.format == v["format"]                  # the report says what was compiled
            assert torch.equal(const.value.to_dense(), weights[r["weight"]])   # exact in every variant


def test_save_load_round_trip(block, saved):
    m, inputs = block
    top = json.loads((Path(saved) / "manifest.json").read_text())
    assert [v["dir"] for v in top["variants"]] == ["v0", "v1"]
    assert [v["inputs"][0]["shape"] for v in top["variants"]] == [[128, D], [1, D]]
    assert set(top["files"]) == {"v0/manifest.json", "v1/manifest.json"}
    for d in ("v0", "v1"):
        assert (Path(saved) / d / "lib.so").is_file()
    assert not [p for p in Path(saved).parent.iterdir() if p.name.startswith(".sparsec-")]   # no temp left
    loaded = sparsec.load(saved)
    assert isinstance(loaded, DispatchLoaded)
    counts = _count_plan_runs(loaded.variants)
    for i in (1, 0):
        got = loaded(*inputs[i])[0]
        torch.testing.assert_close(got, m(*inputs[i]).detach(), atol=1e-4, rtol=1e-4)
        assert loaded.last_variant == i
    assert counts == [1, 1]
    assert [len(r["variants"]) for r in loaded.report] == [2, 2]


def test_tampered_sub_artifact_is_refused(saved, tmp_path):
    bad = tmp_path / "bad.sparsec"
    shutil.copytree(saved, bad)
    w = sorted((bad / "v1" / "weights").iterdir())[0]
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(SerializationError, match=rf"v1/weights/{w.name}: sha256 mismatch"):
        sparsec.load(str(bad))
    shutil.rmtree(bad)
    shutil.copytree(saved, bad)
    sub = bad / "v0" / "manifest.json"
    sub.write_text(sub.read_text().replace('"artifact_version": 1', '"artifact_version": 1 '))
    with pytest.raises(SerializationError, match=r"v0/manifest.json: sha256 mismatch"):
        sparsec.load(str(bad))


def test_unknown_shape_is_a_clear_error(compiled, saved):
    for model in (compiled, sparsec.load(saved)):
        with pytest.raises(ModelError, match=r"float32\[2, 64\].*available: v0 \(float32\[128, 64\]\); "
                                             r"v1 \(float32\[1, 64\]\)"):
            model(torch.randn(2, D))
        with pytest.raises(ModelError, match=r"float64\[1, 64\]"):
            model(torch.randn(1, D, dtype=torch.float64))


def test_bad_inputs_list(block):
    m, inputs = block
    with pytest.raises(ParameterError, match="entries 0 and 1 have the same shapes"):
        compile_dispatch(m, [inputs[1], (torch.zeros(1, D),)])
    with pytest.raises(ParameterError, match="entry 1 must be a tuple of tensors"):
        compile_dispatch(m, [inputs[0], ("x",)])
    with pytest.raises(ParameterError, match="at least one"):
        compile_dispatch(m, [])


def test_model_file_dispatch_inputs(tmp_path):
    loaded = load_model(EXAMPLE)
    assert [tuple(x[0].shape) for x in (loaded.example_inputs, *loaded.dispatch_inputs)] == [(128, 128), (1, 128)]
    assert load_model(ROOT / "examples" / "mlp.py").dispatch_inputs == ()
    f = tmp_path / "m.py"
    head = "import torch\nmodel = torch.nn.Linear(4, 4)\nEXAMPLE_INPUTS = (torch.randn(2, 4),)\n"
    f.write_text(head + "DISPATCH_INPUTS = [(torch.randn(1, 4), torch.randn(1, 4))]\n")
    with pytest.raises(ModelError, match=rf"{f}: dispatch inputs entry 0 has 2 tensor\(s\); the example inputs have 1"):
        load_model(f)
    f.write_text(head + "DISPATCH_INPUTS = 3\n")
    with pytest.raises(ModelError, match=rf"{f}: dispatch inputs must be a list of tuples of tensors"):
        load_model(f)
    f.write_text(head + "def dispatch_inputs():\n    return 1 / 0\n")
    with pytest.raises(ModelError, match=rf"{f}:5: dispatch_inputs\(\) raised ZeroDivisionError"):
        load_model(f)


def _cli(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "sparsec", *args], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r


def test_cli_compile_and_run_example(tmp_path):
    out = tmp_path / "dm.sparsec"
    r = _cli("compile", str(EXAMPLE), "-o", str(out), "--json", cwd=tmp_path)
    doc = json.loads(r.stdout)
    assert "2 variants" in r.stderr
    assert [v["inputs"][0]["shape"] for v in doc["variants"]] == [[128, 128], [1, 128]]
    assert all(v["check_max_rel_error"] <= 1e-3 for v in doc["variants"])
    assert all(len(layer["variants"]) == 2 for layer in doc["report"]) and len(doc["report"]) == 2
    r = _cli("compile", str(EXAMPLE), "-o", str(tmp_path / "dm2.sparsec"), cwd=tmp_path)
    assert "v0 format (T)" in r.stdout and "v1 format (T)" in r.stdout     # the table: a format per variant

    ref = load_model(EXAMPLE)                 # the file seeds itself: the same weights as the compiled ones
    x = torch.randn(128, 128)
    np.save(tmp_path / "x.npy", x.numpy())
    _cli("run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref.model(x).detach().numpy(), atol=1e-4, rtol=1e-4)
    loaded = sparsec.load(str(out))           # the decode shape picks the other variant
    x1 = ref.dispatch_inputs[0][0]
    np.testing.assert_allclose(loaded(x1.numpy())[0], ref.model(x1).detach().numpy(), atol=1e-4, rtol=1e-4)
    assert loaded.last_variant == 1
    assert os.listdir(out) and sorted(os.listdir(out)) == ["manifest.json", "v0", "v1"]
    # `sparsec run` takes the decode shape too: the input shapes pick the variant
    np.save(tmp_path / "x1.npy", x1.numpy())
    _cli("run", str(out), "--input", str(tmp_path / "x1.npy"), "--output", str(tmp_path / "y1.npy"), cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), ref.model(x1).detach().numpy(), atol=1e-4, rtol=1e-4)
    np.save(tmp_path / "x7.npy", np.zeros((7, 128), np.float32))
    r = subprocess.run([sys.executable, "-m", "sparsec", "run", str(out), "--input", str(tmp_path / "x7.npy")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "no variant" in r.stderr and "float32[1, 128]" in r.stderr
