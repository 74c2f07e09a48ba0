"""Whole-model compile for the CPU: compiled vs reference interpreter vs eager
torch, every format forced where it applies, the artifact and the CLI."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
import sparsec
from sparsec.api import compile as sc_compile
from sparsec.errors import ModelError, SerializationError
from sparsec.ir.interpret import interpret

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4


def rel_err(a, b):
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def eager(m, x):
    with torch.no_grad():
        return [t for t in torch.utils._pytree.tree_leaves(m(*x)) if isinstance(t, torch.Tensor)]


def check_three_ways(c, m=None, x=None):
    """compiled == interpreter (on the compiled graph), and == eager when the model is unchanged."""
    x = x if x is not None else c.example_inputs
    got = c(*x)
    ref = interpret(c.graph, *x)
    assert len(got) == len(ref)
    for o, r in zip(got, ref):
        assert o.shape == r.shape and o.dtype == r.dtype
        assert rel_err(o, r) <= RTOL
    if m is not None:
        for o, r in zip(got, eager(m, x)):
            assert rel_err(o, r) <= RTOL


@pytest.mark.parametrize("name", ["mlp", "cnn", "encoder_block"])
def test_hand_models_unpruned(name):
    m, x = zoo.hand_models()[name]
    c = sc_compile(m, x)
    assert all(r["format"] == "dense" for r in c.report)
    check_three_ways(c, m, x)


@pytest.mark.parametrize("fmt, pattern, sparsity", [
    ("csr", "unstructured", 0.9), ("bitmap", "unstructured", 0.7), ("nm", "2:4", None),
    ("nm", "1:8", None), ("bsr", "block:4x4", 0.8), ("groupquant", "group:8", 0.5), ("auto", "unstructured", 0.95),
])
def test_mlp_each_format(fmt, pattern, sparsity):
    m, x = zoo.hand_models()["mlp"]
    c = sc_compile(m, x, pattern=pattern, sparsity=sparsity, format=fmt)
    if fmt == "auto":    # 95% unstructured: sparse where the cost model predicts a gain, never lossy
        assert all(r["format"] != "groupquant" for r in c.report)
        # the zoo MLP's layers are so small that launch cost dominates: check a larger one too
        big = sc_compile(zoo.MLP(256, 512, 10).eval(), (torch.randn(16, 256),), pattern=pattern,
                         sparsity=sparsity, format="auto")
        assert any(r["format"] != "dense" for r in big.report)
        check_three_ways(big)
    else:
        assert {r["format"] for r in c.report} == {fmt}
    check_three_ways(c)
    # the pruned model run eagerly with the same weights agrees too (lossless formats)
    if fmt != "groupquant":
        pruned = dict((r["weight"], c.graph.constant(r["weight"]).dense()) for r in c.report)
        m2 = zoo.hand_models()["mlp"][0]
        sd = m2.state_dict()
        for k, v in pruned.items():
            sd[k] = v
        m2.load_state_dict(sd)
        for o, r in zip(c(*x), eager(m2, x)):
            assert rel_err(o, r) <= RTOL


@pytest.mark.parametrize("fmt, pattern, sparsity", [("csr", "unstructured", 0.8), ("nm", "2:4", None),
                                                      ("bsr", "block:4x4", 0.5)])
def test_cnn_sparse_conv(fmt, pattern, sparsity):
    m, x = zoo.hand_models()["cnn"]
    c = sc_compile(m, x, pattern=pattern, sparsity=sparsity, format=fmt)
    assert any(r["op"] == "conv2d" and r["format"] == fmt for r in c.report)
    check_three_ways(c)


@pytest.mark.parametrize("name", list(zoo.TRANSFORMERS))
def test_transformers_models(name):
    m, x = zoo.TRANSFORMERS[name]()
    c = sc_compile(m, x)
    check_three_ways(c, m, x)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_transformers_pruned_csr(name):
    m, x = zoo.TRANSFORMERS[name]()
    c = sc_compile(m, x, pattern="unstructured", sparsity=0.9, format="csr")
    assert sum(r["format"] == "csr" for r in c.report) >= 4
    check_three_ways(c)


# -- artifact ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    m, x = zoo.hand_models()["mlp"]
    c = sc_compile(m, x, pattern="2:4")
    path = c.save(str(tmp_path_factory.mktemp("a") / "mlp.sparsec"))
    return path, c, x


def test_artifact_round_trip(artifact):
    path, c, x = artifact
    loaded = sparsec.load(path)
    for o, r in zip(loaded(*x), c(*x)):
        assert torch.equal(o, r)
    # numpy in, numpy out
    out = loaded(*(t.numpy() for t in x))
    assert isinstance(out[0], np.ndarray)
    man = json.loads(Path(path, "manifest.json").read_text())
    assert set(man["files"]) >= {"lib.so"} and man["tvm_version"].startswith("0.27")
    assert "graph main(" in man["graph"]


def _copy(path, tmp_path):
    dst = tmp_path / "copy.sparsec"
    shutil.copytree(path, dst)
    return dst


def test_tampered_weight_is_refused(artifact, tmp_path):
    dst = _copy(artifact[0], tmp_path)
    w = sorted((dst / "weights").glob("*.npy"))[0]
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(SerializationError, match=rf"{w.name}: sha256 mismatch"):
        sparsec.load(dst)


def test_truncated_library_is_refused(artifact, tmp_path):
    dst = _copy(artifact[0], tmp_path)
    lib = dst / "lib.so"
    lib.write_bytes(lib.read_bytes()[:1000])
    with pytest.raises(SerializationError, match="lib.so: sha256 mismatch"):
        sparsec.load(dst)


def test_missing_and_corrupt_manifest(artifact, tmp_path):
    dst = _copy(artifact[0], tmp_path)
    (dst / "weights" / sorted(os.listdir(dst / "weights"))[0]).unlink()
    with pytest.raises(SerializationError, match="missing from the artifact"):
        sparsec.load(dst)
    (dst / "manifest.json").write_text("{not json")
    with pytest.raises(SerializationError, match="manifest.json: unreadable or corrupt"):
        sparsec.load(dst)
    with pytest.raises(SerializationError, match="not a sparsec artifact"):
        sparsec.load(tmp_path / "nothing")


def test_wrong_input_shape_is_refused(artifact):
    path, c, x = artifact
    with pytest.raises(ModelError, match=r"expected float32\[4, 32\]"):
        sparsec.load(path)(torch.randn(3, 32))


def test_copy_inputs_checks_every_slot():
    """The input check shared by the CPU and GPU executors: count, type, dtype and shape, named."""
    import numpy as np

    from sparsec.backends.runtime import copy_inputs

    slots = [("x", torch.zeros(2, 3), torch.float32, (2, 3)), ("ids", torch.zeros(4, dtype=torch.int64),
                                                               torch.int64, (4,))]
    with pytest.raises(ModelError, match=r"takes 2 inputs \(x, ids\), got 1"):
        copy_inputs(slots, [torch.ones(2, 3)])
    with pytest.raises(ModelError, match="input ids: expected a tensor, got list"):
        copy_inputs(slots, [torch.ones(2, 3), [1, 2, 3, 4]])
    with pytest.raises(ModelError, match=r"input x: expected float32\[2, 3\], got float64\[2, 3\]"):
        copy_inputs(slots, [torch.ones(2, 3, dtype=torch.float64), torch.arange(4)])
    assert copy_inputs(slots, [np.full((2, 3), 2, np.float32), np.arange(4)]) is True
    assert slots[0][1].eq(2).all() and slots[1][1].tolist() == [0, 1, 2, 3]
    assert copy_inputs(slots, [torch.ones(2, 3), torch.arange(4)]) is False


# -- CLI ----------------------------------------------------------------------------

def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "sparsec", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_compile_and_run(tmp_path):
    out = tmp_path / "mlp.sparsec"
    r = cli("compile", "examples/mlp.py", "--sparsity", "0.9", "--format", "csr", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "csr" in r.stdout and "check: compiled vs reference" in r.stdout
    x = torch.randn(16, 256)
    np.save(tmp_path / "x.npy", x.numpy())
    r = cli("run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    c_ref = sparsec.load(out)(x)[0].numpy()
    np.testing.assert_array_equal(y, c_ref)
    # wrong input shape: one clear error, non-zero exit
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.float32))
    r = cli("run", str(out), "--input", str(tmp_path / "bad.npy"))
    assert r.returncode == 1 and "expected float32[16, 256]" in r.stderr


def test_cli_compile_bad_flags(tmp_path):
    r = cli("compile", "examples/mlp.py", "--pattern", "5:4", "-o", str(tmp_path / "x"))
    assert r.returncode == 1 and "1 <= N < M" in r.stderr
    assert not (tmp_path / "x").exists()
    r = cli("compile", "examples/mlp.py", "--sparsity", "1.5", "-o", str(tmp_path / "x"))
    assert r.returncode == 1 and "--sparsity must be in [0, 1)" in r.stderr
    r = cli("compile", "examples/mlp.py", "--target", "riscv", "-o", str(tmp_path / "x"))
    assert r.returncode == 1 and "unknown --target 'riscv'" in r.stderr


def test_cli_explain_json_and_spec(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[[rule]]\nlayers = "0"\npattern = "2:4"\n\n[[rule]]\nlayers = "2"\npattern = "unstructured"\n'
                    'sparsity = 0.9\n')
    r = cli("compile", "examples/mlp.py", "--spec", str(spec), "--json", "-o", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)["report"]
    by = {x["weight"]: x for x in rep}
    assert by["0.weight"]["sparsity"] == pytest.approx(0.5) and by["2.weight"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert by["4.weight"]["sparsity"] == 0.0                      # the head is excluded by default
    for x in rep:                                                 # every decision carries its candidates
        assert any(c["format"] == "dense" for c in x["candidates"])
    r = cli("compile", "examples/mlp.py", "--sparsity", "0.9", "--explain", "-o", str(tmp_path / "b"))
    assert r.returncode == 0 and "choice:" in r.stdout and "predicted" in r.stdout
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert all(x["candidates"] for x in man["report"])            # the explain report is in the manifest
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nlayers = "nothing.*"\npattern = "2:4"\n')
    r = cli("compile", "examples/mlp.py", "--spec", str(bad), "-o", str(tmp_path / "c"))
    assert r.returncode == 1 and "rule 1 (layers = 'nothing.*') matches no layer" in r.stderr
    assert not (tmp_path / "c").exists()


def test_measure_flag_records_measurements():
    m, x = zoo.hand_models()["mlp"]
    c = sc_compile(m, x, pattern="unstructured", sparsity=0.9, measure=True)
    for r in c.report:
        measured = [cand for cand in r["candidates"] if "measured_s" in cand]
        assert any(cand["format"] == "dense" for cand in measured) and len(measured) >= 2
        chosen = [cand for cand in measured if cand["format"] == r["format"]]
        assert chosen and chosen[0]["measured_s"] == min(cand["measured_s"] for cand in measured)
    check_three_ways(c)
