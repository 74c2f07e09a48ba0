"""Before/Expected tests of the CPU pipeline's passes (IR text), verifier between passes."""
import textwrap

import pytest
import torch

from sparsec.errors import ParameterError
from sparsec.ir.formats import BSR, CSR, NM, Dense
from sparsec.ir.graph import Constant
from sparsec.ir.interpret import interpret
from sparsec.ir.printer import parse_graph, print_graph
from sparsec.ir.verify import verify
from sparsec.passes.canonicalize import canonicalize_matmul
from sparsec.passes.fuse import fuse_epilogues
from sparsec.passes.pipeline import run_passes
from sparsec.passes.prune import prune
from sparsec.passes.cost import CostModel, host_desc
from sparsec.passes.select import NO_REGRESSION_MARGIN, detect_nm, select_formats
from sparsec.passes.sparsify import sparsify


def consts(**shapes):
    g = torch.Generator().manual_seed(0)
    return {k: Dense.from_dense(torch.randn(*s, generator=g)) for k, s in shapes.items()}


def test_canonicalize_addmm_and_mm():
    c = consts(w=(8, 4), b=(4,), v=(4, 3))
    before = textwrap.dedent("""\
        graph main(%x: f32[2, 8]) {
          const %w: f32[8, 4] dense
          const %b: f32[4] dense
          const %v: f32[4, 3] dense
          %h: f32[2, 4] = addmm(%b, %x, %w) {alpha=1, beta=1}
          %y: f32[2, 3] = mm(%h, %v)
          return %y
        }
        """)
    expected = textwrap.dedent("""\
        graph main(%x: f32[2, 8]) {
          const %b: f32[4] dense
          const %w.T: f32[4, 8] dense
          const %v.T: f32[3, 4] dense
          %h: f32[2, 4] = linear(%x, %w.T, %b) {activation=None, residual=False}
          %y: f32[2, 3] = linear(%h, %v.T) {activation=None, residual=False}
          return %y
        }
        """)
    g = parse_graph(before, c)
    out = canonicalize_matmul(g)
    verify(out)
    assert print_graph(out) == expected
    x = torch.randn(2, 8)
    torch.testing.assert_close(interpret(out, x)[0], interpret(g, x)[0])


def test_canonicalize_leaves_scaled_addmm_alone():
    c = consts(w=(8, 4), b=(4,))
    text = textwrap.dedent("""\
        graph main(%x: f32[2, 8]) {
          const %w: f32[8, 4] dense
          const %b: f32[4] dense
          %h: f32[2, 4] = addmm(%b, %x, %w) {alpha=1, beta=0.5}
          return %h
        }
        """)
    assert print_graph(canonicalize_matmul(parse_graph(text, c))) == text


def test_fuse_epilogue_only_single_user():
    c = consts(w=(4, 8), u=(4, 4))
    before = textwrap.dedent("""\
        graph main(%x: f32[2, 8]) {
          const %w: f32[4, 8] dense
          const %u: f32[4, 4] dense
          %a: f32[2, 4] = linear(%x, %w) {activation=None, residual=False}
          %r: f32[2, 4] = relu(%a)
          %b: f32[2, 4] = linear(%r, %u) {activation=None, residual=False}
          %g: f32[2, 4] = gelu(%b) {approximate="tanh"}
          %s: f32[2, 4] = silu(%b)
          %o: f32[2, 4] = add(%g, %s) {alpha=1}
          return %o
        }
        """)
    expected = textwrap.dedent("""\
        graph main(%x: f32[2, 8]) {
          const %w: f32[4, 8] dense
          const %u: f32[4, 4] dense
          %r: f32[2, 4] = linear(%x, %w) {activation="relu", residual=False}
          %b: f32[2, 4] = linear(%r, %u) {activation=None, residual=False}
          %g: f32[2, 4] = gelu(%b) {approximate="tanh"}
          %s: f32[2, 4] = silu(%b)
          %o: f32[2, 4] = add(%g, %s) {alpha=1}
          return %o
        }
        """)
    g = parse_graph(before, c)
    out = fuse_epilogues(g)
    assert print_graph(out) == expected
    x = torch.randn(2, 8)
    torch.testing.assert_close(interpret(out, x)[0], interpret(g, x)[0])


def _mlp_text():
    return textwrap.dedent("""\
        graph main(%x: f32[3, 16]) {
          const %w1: f32[32, 16] dense
          const %w2: f32[8, 32] dense
          %h: f32[3, 32] = linear(%x, %w1) {activation=None, residual=False}
          %y: f32[3, 8] = linear(%h, %w2) {activation=None, residual=False}
          return %y
        }
        """)


ANALYTIC = CostModel.analytic(host_desc(2))


def test_select_auto_is_exact_and_picks_the_least_predicted():
    g0 = torch.Generator().manual_seed(1)
    w1 = prune(torch.randn(32, 16, generator=g0), "2:8").weight
    w2 = prune(torch.randn(8, 32, generator=g0), "block:4x4", 0.75).weight
    g = parse_graph(_mlp_text(), {"w1": Dense.from_dense(w1), "w2": Dense.from_dense(w2)})
    out, choices = select_formats(g, "auto", cost=ANALYTIC)
    verify(out)
    assert torch.equal(out.constant("w1").dense(), w1) and torch.equal(out.constant("w2").dense(), w2)
    for ch in choices:
        best = min(ch.candidates, key=lambda c: c["predicted_s"])
        dense = next(c for c in ch.candidates if c["format"] == "dense")
        if best["predicted_s"] * NO_REGRESSION_MARGIN > dense["predicted_s"]:
            assert ch.format == "dense"          # a gain inside the margin is not taken
        else:
            assert ch.format == best["format"]
        assert ch.tokens == 3
    # the 2:8 weight is offered as N:M, the block-pruned one is not (it follows no N:M)
    assert any(c["format"] == "nm" for c in choices[0].candidates)


def test_no_regression_when_sparse_is_predicted_slower():
    """A cost model where every sparse family is slow: auto must keep dense."""
    slow = CostModel.analytic(host_desc(2))
    for f in ("csr", "bitmap", "bsr", "nm", "groupquant"):
        for r in ("gemv", "tokens"):
            slow.coef[f"{f}/{r}"] = [1.0, 0.0, 0.0, 0.0, 0.0]     # one second per call
    w1 = prune(torch.randn(32, 16), "unstructured", 0.99).weight
    g = parse_graph(_mlp_text(), {"w1": Dense.from_dense(w1), "w2": Dense.from_dense(torch.randn(8, 32))})
    out, choices = select_formats(g, "auto", cost=slow)
    assert [c.format for c in choices] == ["dense", "dense"]
    assert "dense is fastest" in choices[0].reason


def test_measure_overrides_prediction():
    calls = []

    def fake_measure(fmt, tokens):
        calls.append(fmt.name)
        return 1.0 if fmt.name == "dense" else 2.0          # dense measured fastest
    w1 = prune(torch.randn(32, 16), "unstructured", 0.95).weight
    g = parse_graph(_mlp_text(), {"w1": Dense.from_dense(w1), "w2": Dense.from_dense(torch.randn(8, 32))})
    out, choices = select_formats(g, "auto", cost=ANALYTIC, measure=fake_measure)
    assert choices[0].format == "dense" and "dense" in calls and len(calls) >= 2
    assert all("measured_s" in c for c in choices[0].candidates if c["format"] == "dense")


def test_sparsify_then_select_keeps_function_of_pruned_model():
    g = parse_graph(_mlp_text(), consts(w1=(32, 16), w2=(8, 32)))
    choices = []
    pruned = run_passes(g, [("sparsify", lambda g: sparsify(g, "unstructured", 0.9)),
                            ("select", lambda g: select_formats(g, "csr", cost=ANALYTIC)[0])])
    assert isinstance(pruned.constant("w1").value, CSR)
    assert pruned.constant("w1").value.density == pytest.approx(0.1, abs=0.01)


def test_detect_nm():
    w = prune(torch.randn(4, 16), "1:4").weight
    assert detect_nm(w) == (1, 4)
    assert detect_nm(torch.randn(4, 16)) is None


def test_forced_nm_without_pattern_is_refused():
    g = parse_graph(_mlp_text(), consts(w1=(32, 16), w2=(8, 32)))
    with pytest.raises(ParameterError, match="w1: --format nm, but it follows no N:M pattern"):
        select_formats(g, "nm", cost=ANALYTIC)


def test_verifier_between_passes_names_the_pass():
    g = parse_graph(_mlp_text(), consts(w1=(32, 16), w2=(8, 32)))
    import dataclasses
    from sparsec.ir.verify import VerifyError

    def broken(g):
        return g.with_nodes(g.nodes[1:])
    with pytest.raises(VerifyError, match=r"after pass 'broken' \(passes before: ok\)"):
        run_passes(g, [("ok", lambda g: g), ("broken", broken)])


def test_arm_target_selects_by_the_static_estimate():
    """--target arm scores candidates with the llvm-mca estimate of the chosen core."""
    from sparsec.backends.arm.cost import ArmCost

    w1 = prune(torch.randn(32, 16), "unstructured", 0.9).weight
    g = parse_graph(_mlp_text(), {"w1": Dense.from_dense(w1), "w2": Dense.from_dense(torch.randn(8, 32))})
    cost = ArmCost("cortex-a76")
    out, choices = select_formats(g, "auto", cost=cost)
    assert "cortex-a76" in cost.source
    by = {c.weight: c for c in choices}
    assert by["w1"].format != "dense"
    for ch in choices:
        best = min(ch.candidates, key=lambda c: c["predicted_s"])
        dense = next(c for c in ch.candidates if c["format"] == "dense")
        assert ch.format == (best["format"] if best["predicted_s"] * NO_REGRESSION_MARGIN <= dense["predicted_s"]
                             else "dense")
    assert torch.equal(out.constant("w1").dense(), w1)
