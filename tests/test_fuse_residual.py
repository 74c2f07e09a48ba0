"""Residual-add fusion into the matmul epilogue: Y = act(X Wᵀ + b) + R.

Before/Expected IR text, the reference rule (interpreter) and its errors, the printer/parser round
trip, every CPU kernel family against eager torch, the TE lowering (non-constant weight), and whole
BERT-like models compiled end to end against eager torch.
"""
import textwrap

import pytest
import torch
import torch.nn.functional as F

import zoo
from sparsec.backends.kernels import build_matmul, matmul_primfunc
from sparsec.backends.kernels.common import KernelError, MatmulSpec, fuse_residual
from sparsec.errors import ModelError
from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant
from sparsec.ir.graph import make_node
from sparsec.ir.interpret import interpret
from sparsec.ir.ops import Op
from sparsec.ir.printer import parse_graph, print_graph
from sparsec.ir.types import TensorType
from sparsec.ir.verify import verify
from sparsec.passes.fuse import fuse_epilogues
from sparsec.passes.prune import prune


def consts(**shapes):
    g = torch.Generator().manual_seed(0)
    return {k: Dense.from_dense(torch.randn(*s, generator=g)) for k, s in shapes.items()}


BEFORE = textwrap.dedent("""\
    graph main(%x: f32[2, 3, 8], %m: f32[2, 3, 4]) {
      const %w: f32[4, 8] dense
      const %b: f32[4] dense
      const %u: f32[4, 4] dense
      const %v: f32[4, 4] dense
      const %c: f32[2, 3, 4] dense
      %h: f32[2, 3, 4] = linear(%x, %w, %b) {activation=None, residual=False}
      %g: f32[2, 3, 4] = gelu(%h) {approximate="none"}
      %r1: f32[2, 3, 4] = add(%m, %g) {alpha=1}
      %p: f32[2, 3, 4] = linear(%r1, %u) {activation=None, residual=False}
      %r2: f32[2, 3, 4] = add(%p, %r1) {alpha=1}
      %q: f32[2, 3, 4] = linear(%r2, %v) {activation=None, residual=False}
      %s: f32[2, 3, 4] = add(%q, %r2) {alpha=2}
      %t: f32[2, 3, 4] = linear(%s, %v) {activation=None, residual=False}
      %bc: f32[2, 3, 4] = add(%t, %b) {alpha=1}
      %k: f32[2, 3, 4] = linear(%bc, %u) {activation=None, residual=False}
      %kc: f32[2, 3, 4] = add(%k, %c) {alpha=1}
      %o: f32[2, 3, 4] = linear(%kc, %u) {activation=None, residual=False}
      %o2: f32[2, 3, 4] = add(%o, %o) {alpha=1}
      return %o2
    }
    """)

# fused: gelu then the add with %m (operand order (R, Y)); the add with %r1 (order (Y, R)).
# Not fused: alpha=2; a broadcast addend (%b is [4]); a constant addend (%c); add(y, y).
EXPECTED = textwrap.dedent("""\
    graph main(%x: f32[2, 3, 8], %m: f32[2, 3, 4]) {
      const %w: f32[4, 8] dense
      const %b: f32[4] dense
      const %u: f32[4, 4] dense
      const %v: f32[4, 4] dense
      const %c: f32[2, 3, 4] dense
      %r1: f32[2, 3, 4] = linear(%x, %w, %b, %m) {activation="gelu", residual=True}
      %r2: f32[2, 3, 4] = linear(%r1, %u, %r1) {activation=None, residual=True}
      %q: f32[2, 3, 4] = linear(%r2, %v) {activation=None, residual=False}
      %s: f32[2, 3, 4] = add(%q, %r2) {alpha=2}
      %t: f32[2, 3, 4] = linear(%s, %v) {activation=None, residual=False}
      %bc: f32[2, 3, 4] = add(%t, %b) {alpha=1}
      %k: f32[2, 3, 4] = linear(%bc, %u) {activation=None, residual=False}
      %kc: f32[2, 3, 4] = add(%k, %c) {alpha=1}
      %o: f32[2, 3, 4] = linear(%kc, %u) {activation=None, residual=False}
      %o2: f32[2, 3, 4] = add(%o, %o) {alpha=1}
      return %o2
    }
    """)


def _consts():
    return consts(w=(4, 8), b=(4,), u=(4, 4), v=(4, 4), c=(2, 3, 4))


def test_fuse_residual_before_expected():
    g = parse_graph(BEFORE, _consts())
    out = fuse_epilogues(g)
    verify(out)
    assert print_graph(out) == EXPECTED
    x, m = torch.randn(2, 3, 8), torch.randn(2, 3, 4)
    torch.testing.assert_close(interpret(out, x, m)[0], interpret(g, x, m)[0])
    # the fused text parses back to the same graph (printer/parser round trip)
    assert print_graph(parse_graph(EXPECTED, _consts())) == EXPECTED


def test_fuse_residual_off_and_multi_user():
    g = parse_graph(BEFORE, _consts())
    assert "residual=True" not in print_graph(fuse_epilogues(g, residual=False))
    # the linear's result has a second user: not fused (the add would need the value before the add)
    text = textwrap.dedent("""\
        graph main(%x: f32[3, 4], %m: f32[3, 4]) {
          const %u: f32[4, 4] dense
          %p: f32[3, 4] = linear(%x, %u) {activation=None, residual=False}
          %a: f32[3, 4] = add(%p, %m) {alpha=1}
          %z: f32[3, 4] = mul(%a, %p)
          return %z
        }
        """)
    g = parse_graph(text, consts(u=(4, 4)))
    assert print_graph(fuse_epilogues(g)) == text
    # the linear's result is a graph output: not fused
    text = text.replace("  %z: f32[3, 4] = mul(%a, %p)\n", "").replace("return %z", "return %a, %p")
    g = parse_graph(text, consts(u=(4, 4)))
    assert print_graph(fuse_epilogues(g)) == text


def test_fuse_residual_dtype_must_match():
    text = textwrap.dedent("""\
        graph main(%x: f32[3, 4], %m: f64[3, 4]) {
          const %u: f32[4, 4] dense
          %p: f32[3, 4] = linear(%x, %u) {activation=None, residual=False}
          %a: f64[3, 4] = add(%p, %m) {alpha=1}
          return %a
        }
        """)
    g = parse_graph(text, consts(u=(4, 4)))
    assert print_graph(fuse_epilogues(g)) == text       # type promotion: left to the add


def test_reference_rule_errors_name_the_rule():
    types = {"x": TensorType((3, 4), "float32"), "w": TensorType((5, 4), "float32"),
             "r": TensorType((3, 5), "float32"), "rb": TensorType((5,), "float32"),
             "r64": TensorType((3, 5), "float64")}
    n = make_node("y", Op.LINEAR, ["x", "w", "r"], {"residual": True}, types)
    assert n.type == TensorType((3, 5), "float32")
    with pytest.raises(ModelError, match="residual=True needs the residual"):
        make_node("y", Op.LINEAR, ["x", "w"], {"residual": True}, types)
    with pytest.raises(ModelError, match="residual must match the output exactly"):
        make_node("y", Op.LINEAR, ["x", "w", "rb"], {"residual": True}, types)      # no broadcasting
    with pytest.raises(ModelError, match="residual must match the output exactly"):
        make_node("y", Op.LINEAR, ["x", "w", "r64"], {"residual": True}, types)     # no promotion
    with pytest.raises(ModelError, match="without residual=True"):
        make_node("y", Op.LINEAR, ["x", "w", "rb", "r"], {}, types)
    x, w, b, r = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5), torch.randn(3, 5)
    from sparsec.ir.ops import evaluate, full_attrs
    got = evaluate(Op.LINEAR, [x, w, b, r], full_attrs(Op.LINEAR, {"residual": True, "activation": "silu"}))
    torch.testing.assert_close(got, F.silu(F.linear(x, w, b)) + r)


# -- kernels --------------------------------------------------------------------------

def _formats(w):
    return [Dense.from_dense(w), CSR.from_dense(w), Bitmap.from_dense(w, tile=(8, 8)),
            NM.from_dense(prune(w, "2:4").weight, n=2, m=4), BSR.from_dense(w, block=(4, 4)),
            GroupQuant.from_dense(w, group=8, bits=4)]


@pytest.mark.parametrize("tokens", [1, 19])
@pytest.mark.parametrize("idx", range(6))
def test_every_family_takes_the_residual(idx, tokens):
    g = torch.Generator().manual_seed(idx * 7 + tokens)
    w = prune(torch.randn(20, 40, generator=g), "unstructured", 0.6).weight
    fmt = _formats(w)[idx]
    wd = fmt.to_dense().float()
    b = torch.randn(20, generator=g)
    x, r = torch.randn(tokens, 40, generator=g), torch.randn(tokens, 20, generator=g)
    for bias, act in [(True, "gelu"), (False, None)]:
        k = build_matmul(fmt, tokens, bias=bias, activation=act, residual=True)
        yt = k.run_t(x.t().contiguous(), *(getattr(fmt, n) for n in fmt.buffers), bias=b if bias else None,
                     residual_t=r.t().contiguous())
        y = F.linear(x, wd, b if bias else None)
        ref = (F.gelu(y) if act else y) + r
        torch.testing.assert_close(yt.t(), ref, rtol=1e-4, atol=1e-4)
        with pytest.raises(KernelError, match="residual"):
            k.run_t(x.t().contiguous(), *(getattr(fmt, n) for n in fmt.buffers), bias=b if bias else None)


def test_residual_args_and_float16():
    w = torch.randn(16, 32).half()
    fmt = Dense.from_dense(w)
    _, args, _ = matmul_primfunc(fmt, 8, bias=True, residual=True)
    assert [a.name for a in args][-3:] == ["bias", "RT", "YT"]
    k = build_matmul(fmt, 8, residual=True)
    x, r = torch.randn(8, 32).half(), torch.randn(8, 16).half()
    yt = k.run_t(x.t().contiguous(), fmt.values, residual_t=r.t().contiguous())
    torch.testing.assert_close(yt.t().float(), F.linear(x.float(), w.float()) + r.float(), rtol=2e-2, atol=2e-2)


def test_fuse_residual_refuses_a_kernel_that_reads_its_output():
    import tvm
    from tvm.script import tirx as T

    @T.prim_func
    def acc(a: T.handle, yt: T.handle):
        A = T.match_buffer(a, (4, 2), "float32")
        YT = T.match_buffer(yt, (4, 2), "float32")
        for i in range(4):
            for j in range(2):
                YT[i, j] = YT[i, j] + A[i, j]

    assert isinstance(acc, tvm.tirx.PrimFunc)
    with pytest.raises(KernelError, match="reads YT"):
        fuse_residual(acc, MatmulSpec(2, 4, 4, residual=True))


# -- whole graphs ---------------------------------------------------------------------

def test_te_lowering_of_a_fused_linear_with_a_weight_input():
    """A linear whose weight is not a constant goes through the TE lowering: the fused activation
    and residual are computed there too (compiled == interpreter == unfused)."""
    from sparsec.backends.llvm.compile import compile_graph

    text = textwrap.dedent("""\
        graph main(%x: f32[5, 8], %w: f32[6, 8], %m: f32[5, 6]) {
          const %b: f32[6] dense
          %h: f32[5, 6] = linear(%x, %w, %b) {activation=None, residual=False}
          %g: f32[5, 6] = silu(%h)
          %a: f32[5, 6] = add(%g, %m) {alpha=1}
          return %a
        }
        """)
    g = parse_graph(text, consts(b=(6,)))
    fused = fuse_epilogues(g)
    assert "activation=\"silu\", residual=True" in print_graph(fused)
    x, w, m = torch.randn(5, 8), torch.randn(6, 8), torch.randn(5, 6)
    got = compile_graph(fused).executor()(x, w, m)[0]
    torch.testing.assert_close(got, interpret(g, x, w, m)[0], rtol=1e-5, atol=1e-5)


def _eager(m, x):
    with torch.no_grad():
        out = m(*x)
    return out[0] if isinstance(out, (tuple, list)) else getattr(out, "last_hidden_state", out)


@pytest.mark.parametrize("fmt, pattern, sparsity", [("dense", None, None), ("csr", "unstructured", 0.8),
                                                      ("bsr", "block:4x4", 0.5)])
def test_bert_block_compiled_with_fused_residuals_matches_eager(fmt, pattern, sparsity):
    from sparsec.api import compile as sc_compile

    m, x = zoo.bert(layers=1)
    c = sc_compile(m, x, pattern=pattern, sparsity=sparsity, format=fmt)
    fused = [n for n in c.graph.nodes if n.op == Op.LINEAR and n.attr["residual"]]
    assert len(fused) == 2          # attention output and FFN output, each "dense(...) + hidden"
    ref = interpret(c.graph, *x)[0]
    got = c(*x)[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    if fmt == "dense":               # unpruned: the model's own function
        torch.testing.assert_close(got, _eager(m, x), rtol=1e-4, atol=1e-4)
    # the explain report names the fused node and its epilogue
    rows = {r["weight"]: r for r in c.report}
    for n in fused:
        assert rows[n.inputs[1]]["node"] == n.name and "residual" in rows[n.inputs[1]]["epilogue"]


def test_encoder_block_pre_ln_matches_eager():
    from sparsec.api import compile as sc_compile

    m, x = zoo.hand_models()["encoder_block"]
    c = sc_compile(m, x)
    assert sum(n.op == Op.LINEAR and n.attr["residual"] for n in c.graph.nodes) == 2
    torch.testing.assert_close(c(*x)[0], _eager(m, x), rtol=1e-4, atol=1e-4)
