"""Frontend + reference interpreter vs eager PyTorch on real models, the text
form round trip on every test graph, the verifier, and `sparsec inspect`."""
import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import zoo
from sparsec.errors import ModelError
from sparsec.frontends import import_model, import_module
from sparsec.ir.graph import Node
from sparsec.ir.interpret import interpret
from sparsec.ir.printer import parse_graph, print_graph
from sparsec.ir.types import TensorType
from sparsec.ir.verify import VerifyError, verify

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

_CACHE = {}


def model_and_graph(name):
    if name not in _CACHE:
        if name in zoo.TRANSFORMERS:
            m, x = zoo.TRANSFORMERS[name]()
        else:
            m, x = zoo.hand_models()[name]
        _CACHE[name] = (m, x, import_module(m, x))
    return _CACHE[name]


ALL = ["mlp", "cnn", "encoder_block", *zoo.TRANSFORMERS]


def assert_matches_eager(m, x, g, rtol=1e-5):
    with torch.no_grad():
        ref = [t for t in torch.utils._pytree.tree_leaves(m(*x)) if isinstance(t, torch.Tensor)]
    got = interpret(g, *x)
    assert len(ref) == len(got)
    for r, o in zip(ref, got):
        assert o.shape == r.shape and o.dtype == r.dtype
        scale = r.abs().max().clamp_min(1e-6)
        assert float((o - r).abs().max() / scale) <= rtol


@pytest.mark.parametrize("name", ALL)
def test_interpreter_matches_eager(name):
    m, x, g = model_and_graph(name)
    verify(g)
    assert_matches_eager(m, x, g)
    # a second, different input: the graph is not specialised to the example values
    x2 = tuple(torch.randint_like(t, 0, 50) if not t.dtype.is_floating_point else torch.randn_like(t) for t in x)
    assert_matches_eager(m, x2, g)


@pytest.mark.parametrize("name", ALL)
def test_print_parse_round_trip(name):
    _, _, g = model_and_graph(name)
    text = print_graph(g)
    g2 = parse_graph(text, g.constant_map())
    assert print_graph(g2) == text
    assert g2 == g


@pytest.mark.parametrize("name", ["mlp", "bert", "gpt2"])
def test_weights_are_found(name):
    _, _, g = model_and_graph(name)
    ws = g.weights()
    assert ws, "no sparsifiable weights found"
    for node, const in ws:
        assert len(const.value.shape) == 2


# -- verifier ----------------------------------------------------------------------

def _mlp_graph():
    return model_and_graph("mlp")[2]


def test_verifier_rejects_wrong_shape():
    g = _mlp_graph()
    n = g.nodes[0]
    bad = dataclasses.replace(n, type=TensorType((9, 9), n.type.dtype))
    with pytest.raises(VerifyError, match=rf"%{n.name} \(linear.*shape mismatch"):
        verify(g.with_nodes((bad,) + g.nodes[1:]))


def test_verifier_rejects_dtype_mismatch():
    g = _mlp_graph()
    n = g.nodes[0]
    bad = dataclasses.replace(n, type=TensorType(n.type.shape, "float16"))
    with pytest.raises(VerifyError, match=rf"%{n.name}.*dtype mismatch"):
        verify(g.with_nodes((bad,) + g.nodes[1:]))


def test_verifier_rejects_dangling_input():
    g = _mlp_graph()
    n = g.nodes[1]
    bad = dataclasses.replace(n, inputs=("nowhere",))
    with pytest.raises(VerifyError, match=rf"%{n.name}.*%nowhere is not defined"):
        verify(g.with_nodes((g.nodes[0], bad) + g.nodes[2:]))


def test_verifier_rejects_use_before_definition_and_names_the_pass():
    g = _mlp_graph()
    swapped = (g.nodes[1], g.nodes[0]) + g.nodes[2:]
    with pytest.raises(VerifyError, match=r"after pass 'reorder' \(passes before: a, b\).*not defined before use"):
        verify(g.with_nodes(swapped), after_pass="reorder", passes_before=["a", "b"])


def test_verifier_rejects_bad_attrs_and_missing_outputs():
    g = _mlp_graph()
    n = g.nodes[1]
    bad = dataclasses.replace(n, attrs=(("bogus", 1),))
    with pytest.raises(VerifyError, match="unknown attribute"):
        verify(g.with_nodes((g.nodes[0], bad) + g.nodes[2:]))
    with pytest.raises(VerifyError, match="output %ghost is not defined"):
        verify(g.with_nodes(g.nodes, outputs=["ghost"]))


def test_parser_rejects_bad_text():
    g = _mlp_graph()
    text = print_graph(g)
    with pytest.raises(ModelError, match="unknown op 'frobnicate'"):
        parse_graph(text.replace("= relu(", "= frobnicate("), g.constant_map())
    with pytest.raises(ModelError, match="no data given for constant"):
        parse_graph(text, {})
    wrong = text.replace("f32[4, 64] = relu", "f32[4, 65] = relu")
    with pytest.raises(ModelError, match="by inference"):
        parse_graph(wrong, g.constant_map())


# -- model files and `sparsec inspect` ------------------------------------------------

def sparsec(*args):
    return subprocess.run([sys.executable, "-m", "sparsec", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_import_and_match_eager(path):
    g, loaded = import_model(path)
    verify(g)
    assert_matches_eager(loaded.model, loaded.example_inputs, g)


def test_inspect_cli_on_example():
    r = sparsec("inspect", "examples/mlp.py", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["op_counts"]["linear"] == 3
    sparsifiable = [w for w in s["weights"] if w["sparsifiable"]]
    assert [w["shape"] for w in sparsifiable] == [[512, 256], [512, 512], [10, 512]]
    assert s["parameters"] == 256 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    r = sparsec("inspect", "examples/mlp.py", "--ir")
    assert r.returncode == 0 and r.stdout.startswith("graph main(") and "linear(" in r.stdout
    r = sparsec("inspect", "examples/mlp.py")
    assert r.returncode == 0 and "sparsifiable" in r.stdout


BAD_FILES = {
    "syntax": ("import torch\nmodel = torch.nn.Linear(2, 2\n", r"bad\.py:2: syntax error|bad\.py:3: syntax error"),
    "nomodel": ("import torch\nEXAMPLE_INPUTS = (torch.randn(1, 2),)\n", "defines neither `model`"),
    "noinputs": ("import torch\nmodel = torch.nn.Linear(2, 2)\n", "neither `example_inputs\\(\\)`"),
    "raises": ("import torch\n\ndef get_model():\n    raise RuntimeError('boom')\n"
               "EXAMPLE_INPUTS = (torch.randn(1, 2),)\n", r"bad\.py:4: get_model\(\) raised RuntimeError: boom"),
    "unsupported": (textwrap.dedent("""\
        import torch

        class M(torch.nn.Module):
            def forward(self, x):
                return torch.cumsum(x, 0)

        model = M()
        EXAMPLE_INPUTS = (torch.randn(3, 2),)
        """), r"unsupported op aten\.cumsum .*fx node 'cumsum' at bad\.py:5: return torch\.cumsum\(x, 0\)"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_inspect_bad_model_files(tmp_path, kind):
    text, pattern = BAD_FILES[kind]
    f = tmp_path / "bad.py"
    f.write_text(text)
    r = sparsec("inspect", str(f))
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("sparsec: error:")]
    assert len(lines) == 1, r.stderr
    import re
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in r.stderr


def test_inspect_missing_file():
    r = sparsec("inspect", "no/such/model.py")
    assert r.returncode == 1 and "no such model file" in r.stderr
