"""Whole models compiled for aarch64 (--target arm) and run under qemu-aarch64, both ways:

- through the standalone C driver (``--emit c``: generated C over static
  buffers, no Python on the "device") — every model;
- through the real TVM runtime on emulated aarch64 (Debian arm64 CPython +
  the aarch64 TVM wheels, cached by ``backends/arm/make_pyenv.sh``) — the
  artifact's ``run_on_device.py``, numpy only — on the MLP, BERT and ResNet.

Each is compared with eager torch on the same inputs (and, for pruned
models, with the reference interpreter on the pruned graph) within 1e-4.
"""
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
from sparsec.api import compile as sc_compile
from sparsec.backends.arm.compile import run_c_driver
from sparsec.backends.arm.pyenv import run_artifact_tvm
from sparsec.errors import ModelError, ParameterError, SerializationError
from sparsec.frontends.load import load_model
from sparsec.ir.interpret import interpret

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4


def rel_err(a, b):
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def eager(m, x):
    with torch.no_grad():
        return [t for t in torch.utils._pytree.tree_leaves(m(*x)) if isinstance(t, torch.Tensor)]


def assert_close(got, ref):
    assert len(got) == len(ref)
    for o, r in zip(got, ref):
        assert tuple(o.shape) == tuple(r.shape)
        assert rel_err(o, r) <= RTOL


@pytest.mark.parametrize("example", ["mlp.py", "cnn.py", "bert_encoder.py"])
def test_bundled_examples_c_driver(example):
    path = ROOT / "examples" / example
    loaded = load_model(path)
    c = sc_compile(str(path), target="arm")
    assert c.compiled.target.attrs["mtriple"] == "aarch64-linux-gnu"
    assert_close(c(*loaded.example_inputs), eager(loaded.model, loaded.example_inputs))


@pytest.fixture(scope="module")
def two_way(tmp_path_factory):
    """bert / resnet / mlp (2:4) compiled for arm with --emit c, saved, both routes run once."""
    out = {}
    cases = {"bert": zoo.TRANSFORMERS["bert"], "resnet": zoo.TRANSFORMERS["resnet"],
             "mlp24": lambda: zoo.hand_models()["mlp"]}
    for name, make in cases.items():
        m, x = make()
        kw = {"pattern": "2:4", "format": "nm"} if name == "mlp24" else {}
        c = sc_compile(m, x, target="arm", emit="c", **kw)
        path = c.save(str(tmp_path_factory.mktemp(name) / f"{name}.sparsec"))
        out[name] = (c, m, x, path)
    return out


@pytest.mark.parametrize("name", ["bert", "resnet"])
def test_transformers_both_routes(two_way, name):
    c, m, x, path = two_way[name]
    ref = eager(m, x)
    plan = json.load(open(os.path.join(path, "manifest.json")))["plan"]
    assert_close(run_c_driver(os.path.join(path, "c"), plan, x), ref)
    assert_close([torch.from_numpy(o) for o in run_artifact_tvm(path, x)], ref)


def test_pruned_mlp_both_routes(two_way):
    c, m, x, path = two_way["mlp24"]
    assert {r["format"] for r in c.report} == {"nm"}
    ref = interpret(c.graph, *x)
    plan = json.load(open(os.path.join(path, "manifest.json")))["plan"]
    assert_close(run_c_driver(os.path.join(path, "c"), plan, x), ref)
    assert_close([torch.from_numpy(o) for o in run_artifact_tvm(path, x)], ref)


@pytest.mark.parametrize("fmt, pattern, sparsity", [
    ("csr", "unstructured", 0.9), ("bitmap", "unstructured", 0.7), ("nm", "1:8", None),
    ("bsr", "block:4x4", 0.8), ("groupquant", "group:8", 0.5),
])
def test_mlp_each_format_c_driver(fmt, pattern, sparsity):
    m, x = zoo.hand_models()["mlp"]
    c = sc_compile(m, x, target="arm", pattern=pattern, sparsity=sparsity, format=fmt)
    assert {r["format"] for r in c.report} == {fmt}
    got = c(*x)
    assert_close(got, interpret(c.graph, *x))
    if fmt != "groupquant":        # lossless formats: the pruned model run eagerly agrees too
        m2 = zoo.hand_models()["mlp"][0]
        sd = m2.state_dict()
        for r in c.report:
            sd[r["weight"]] = c.graph.constant(r["weight"]).dense()
        m2.load_state_dict(sd)
        assert_close(got, eager(m2, x))


def test_cnn_sparse_conv_c_driver():
    m, x = zoo.hand_models()["cnn"]
    c = sc_compile(m, x, target="arm", pattern="unstructured", sparsity=0.8, format="csr")
    assert any(r["op"] == "conv2d" and r["format"] == "csr" for r in c.report)
    assert_close(c(*x), interpret(c.graph, *x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit", "gpt2"])
def test_more_transformers_c_driver(name):
    m, x = zoo.TRANSFORMERS[name]()
    assert_close(sparsec_compile_arm(m, x)(*x), eager(m, x))


def sparsec_compile_arm(m, x, **kw):
    return sc_compile(m, x, target="arm", **kw)


# -- the artifact ------------------------------------------------------------------------

def test_artifact_layout_and_hashes(two_way):
    _, _, _, path = two_way["mlp24"]
    man = json.load(open(os.path.join(path, "manifest.json")))
    assert man["arch"] == "aarch64" and man["cpu"] == "neoverse-n1" and man["emit"] == ["so", "c"]
    for rel in ("lib.so", "run_on_device.py", "c/model", "c/model.c", "c/kernels.o", "c/weights.bin"):
        assert rel in man["files"], rel
    with open(os.path.join(path, "lib.so"), "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183   # EM_AARCH64


def _copy(path, tmp_path):
    dst = tmp_path / "copy.sparsec"
    shutil.copytree(path, dst)
    return str(dst)


def test_tampered_c_weights_refused_by_device_runner(two_way, tmp_path):
    _, _, x, path = two_way["mlp24"]
    p = _copy(path, tmp_path)
    with open(os.path.join(p, "c", "weights.bin"), "r+b") as f:
        f.seek(8)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(ModelError, match="weights.bin: missing or sha256 mismatch"):
        run_artifact_tvm(p, x)


def test_c_driver_refuses_wrong_weight_file(two_way, tmp_path):
    _, _, x, path = two_way["mlp24"]
    p = _copy(path, tmp_path)
    with open(os.path.join(p, "c", "weights.bin"), "ab") as f:
        f.write(b"\0")
    plan = json.load(open(os.path.join(p, "manifest.json")))["plan"]
    with pytest.raises(ModelError, match="weights.bin: .* bytes, the model needs"):
        run_c_driver(os.path.join(p, "c"), plan, x)


def test_wrong_input_shape_is_refused(two_way):
    c, _, x, _ = two_way["mlp24"]
    with pytest.raises(ModelError, match="input .*expected float32"):
        c(torch.zeros(3, 3))


# -- CLI ------------------------------------------------------------------------------------

def cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsec", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_cli_compile_arm_emit_c(tmp_path):
    out = tmp_path / "mlp.sparsec"
    r = cli("compile", str(ROOT / "examples/mlp.py"), "--target", "arm", "--cpu", "cortex-a76", "--emit", "c",
            "--pattern", "2:4", "-o", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "check: compiled vs reference interpreter" in r.stdout
    man = json.load(open(out / "manifest.json"))
    assert man["cpu"] == "cortex-a76" and "c/model" in man["files"]
    assert '"mcpu":"cortex-a76"' in man["target"].replace(" ", "")


def test_cli_arm_bad_flags(tmp_path, capsys):
    """In-process (`sparsec.cli.main`): each is one line on stderr and exit code 1."""
    from sparsec.cli import main

    for args, want in ((["--target", "arm", "--cpu", "pentium"], "'pentium' is not a supported aarch64 core"),
                       (["--target", "arm", "--emit", "wasm"], "--emit 'wasm'"),
                       (["--cpu", "cortex-a76"], "--cpu and --emit apply to --target arm only")):
        assert main(["compile", str(ROOT / "examples/mlp.py"), *args, "-o", str(tmp_path / "a"), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert want in err and "neoverse-n1" in err if "pentium" in want else want in err
    assert not (tmp_path / "a").exists()
