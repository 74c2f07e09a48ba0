"""Per-op tests: every op of the IR set, lowered from a tiny torch function and
run by the reference interpreter, equals eager torch; the node's inferred
type equals the eager output's shape and dtype (the verifier checks it)."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from sparsec.frontends import import_module
from sparsec.ir.interpret import interpret
from sparsec.ir.ops import OPS, Op
from sparsec.ir.types import TensorType
from sparsec.ir.verify import verify


class Fn(torch.nn.Module):
    def __init__(self, fn, params=()):
        super().__init__()
        self.fn = fn
        for i, p in enumerate(params):
            self.register_buffer(f"p{i}", p)

    def forward(self, *xs):
        return self.fn(*xs, *[getattr(self, f"p{i}") for i in range(len(self._buffers))])


def check(fn, inputs, expect_op, params=(), atol=1e-6):
    m = Fn(fn, params)
    g = import_module(m, tuple(inputs))
    verify(g)
    assert expect_op in {n.op for n in g.nodes}, f"{expect_op} not in {g.op_counts()}"
    ref = m(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = interpret(g, *inputs)
    for r, o in zip(ref, got):
        assert TensorType.of(o) == TensorType.of(r)
        if r.dtype.is_floating_point:
            torch.testing.assert_close(o, r, atol=atol, rtol=1e-5)
        else:
            assert torch.equal(o, r)
    return g


R = lambda *s: torch.randn(*s)

CASES = {
    Op.LINEAR: (lambda x, w, b: F.linear(x, w, b), [R(3, 5)], [R(4, 5), R(4)]),
    Op.MATMUL: (lambda a, b: torch.matmul(a, b), [R(2, 3, 4), R(4, 5)], []),
    Op.MM: (lambda a, b: torch.mm(a, b), [R(3, 4), R(4, 2)], []),
    Op.BMM: (lambda a, b: torch.bmm(a, b), [R(2, 3, 4), R(2, 4, 5)], []),
    Op.ADDMM: (lambda c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2.0), [R(5), R(3, 4), R(4, 5)], []),
    Op.BADDBMM: (lambda c, a, b: torch.baddbmm(c, a, b, alpha=0.5), [R(2, 3, 5), R(2, 3, 4), R(2, 4, 5)], []),
    Op.CONV2D: (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, dilation=1, groups=2),
                [R(1, 4, 9, 7)], [R(6, 2, 3, 3), R(6)]),
    Op.ADD: (lambda a, b: torch.add(a, b, alpha=2), [R(3, 4), R(4)], []),
    Op.SUB: (lambda a, b: a - b, [R(3, 4), R(3, 1)], []),
    Op.MUL: (lambda a: a * 0.5, [R(3, 4)], []),
    Op.DIV: (lambda a, b: torch.div(a, b, rounding_mode="floor"), [R(3, 4), R(3, 4).abs() + 0.5], []),
    Op.POW: (lambda a: a.abs() ** 1.5, [R(3, 4)], []),
    Op.MAXIMUM: (lambda a, b: torch.maximum(a, b), [R(3, 4), R(3, 4)], []),
    Op.MINIMUM: (lambda a, b: torch.minimum(a, b), [R(3, 4), R(1, 4)], []),
    Op.WHERE: (lambda c, a, b: torch.where(c > 0, a, b), [R(3, 4), R(3, 4), R(3, 4)], []),
    Op.EQ: (lambda a, b: a == b, [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 3.0])], []),
    Op.NE: (lambda a, b: a != b, [R(3, 4), R(3, 4)], []),
    Op.LT: (lambda a, b: a < b, [R(3, 4), R(3, 4)], []),
    Op.LE: (lambda a: a <= 0.1, [R(3, 4)], []),
    Op.GT: (lambda a: a > 0, [R(3, 4)], []),
    Op.GE: (lambda a, b: a >= b, [R(3, 4), R(4)], []),
    Op.LOGICAL_AND: (lambda a, b: torch.logical_and(a > 0, b > 0), [R(3, 4), R(3, 4)], []),
    Op.LOGICAL_OR: (lambda a, b: torch.logical_or(a > 0, b > 0), [R(3, 4), R(3, 4)], []),
    Op.NEG: (lambda a: -a, [R(3, 4)], []),
    Op.ABS: (lambda a: a.abs(), [R(3, 4)], []),
    Op.SQRT: (lambda a: a.abs().sqrt(), [R(3, 4)], []),
    Op.RSQRT: (lambda a: (a.abs() + 0.1).rsqrt(), [R(3, 4)], []),
    Op.EXP: (lambda a: a.exp(), [R(3, 4)], []),
    Op.LOG: (lambda a: (a.abs() + 0.1).log(), [R(3, 4)], []),
    Op.ERF: (lambda a: torch.erf(a), [R(3, 4)], []),
    Op.RECIPROCAL: (lambda a: (a.abs() + 0.5).reciprocal(), [R(3, 4)], []),
    Op.TANH: (lambda a: a.tanh(), [R(3, 4)], []),
    Op.SIGMOID: (lambda a: a.sigmoid(), [R(3, 4)], []),
    Op.RELU: (lambda a: a.relu(), [R(3, 4)], []),
    Op.GELU: (lambda a: F.gelu(a, approximate="tanh"), [R(3, 4)], []),
    Op.SILU: (lambda a: F.silu(a), [R(3, 4)], []),
    Op.LOGICAL_NOT: (lambda a: ~(a > 0), [R(3, 4)], []),
    Op.CAST: (lambda a: a.to(torch.float16), [R(3, 4)], []),
    Op.MASKED_FILL: (lambda a, m: a.masked_fill(m > 0, -1e4), [R(3, 4), R(3, 4)], []),
    Op.SOFTMAX: (lambda a: a.softmax(-1), [R(3, 4)], []),
    Op.LOG_SOFTMAX: (lambda a: a.log_softmax(0), [R(3, 4)], []),
    Op.LAYER_NORM: (lambda a, w, b: F.layer_norm(a, (4,), w, b, 1e-6), [R(3, 4)], [R(4), R(4)]),
    Op.BATCH_NORM: (lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, False, 0.1, 1e-3),
                    [R(2, 3, 4, 4)], [R(3), R(3).abs() + 0.5, R(3), R(3)]),
    Op.MAX_POOL2D: (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), [R(1, 2, 7, 7)], []),
    Op.AVG_POOL2D: (lambda x: F.avg_pool2d(x, 2, 2, 1, count_include_pad=False), [R(1, 2, 7, 7)], []),
    Op.ADAPTIVE_AVG_POOL2D: (lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [R(1, 2, 6, 6)], []),
    Op.MEAN: (lambda x: x.mean((0, 2), keepdim=True), [R(2, 3, 4)], []),
    Op.SUM: (lambda x: x.sum(1), [R(2, 3, 4)], []),
    Op.AMAX: (lambda x: x.amax(-1), [R(2, 3, 4)], []),
    Op.RESHAPE: (lambda x: x.reshape(4, -1) * 2, [R(2, 3, 4)], []),
    Op.PERMUTE: (lambda x: x.permute(2, 0, 1) * 2, [R(2, 3, 4)], []),
    Op.TRANSPOSE: (lambda x: x.transpose(0, 2) * 2, [R(2, 3, 4)], []),
    Op.EXPAND: (lambda x: x.expand(3, 2, 4) * 2, [R(2, 1)], []),
    Op.FLATTEN: (lambda x: x.flatten(1) * 2, [R(2, 3, 4)], []),
    Op.UNSQUEEZE: (lambda x: x.unsqueeze(1) * 2, [R(2, 3)], []),
    Op.SQUEEZE: (lambda x: x.squeeze(1) * 2, [R(2, 1, 3)], []),
    Op.SLICE: (lambda x: x[:, 1:5:2] * 2, [R(3, 7)], []),
    Op.SELECT: (lambda x: x[:, 2] * 2, [R(3, 7)], []),
    Op.CAT: (lambda a, b: torch.cat([a, b], 1), [R(2, 3), R(2, 4)], []),
    Op.EMBEDDING: (lambda i, w: F.embedding(i, w), [torch.randint(0, 10, (2, 5))], [R(10, 4)]),
}

# reshape-type ops become views that export may express differently; they are
# checked by the op appearing in at least one of these alternatives
ALTERNATIVES = {Op.FLATTEN: {Op.FLATTEN, Op.RESHAPE}, Op.TRANSPOSE: {Op.TRANSPOSE, Op.PERMUTE},
                Op.MATMUL: {Op.MATMUL, Op.MM, Op.BMM}, Op.SQUEEZE: {Op.SQUEEZE, Op.RESHAPE},
                Op.UNSQUEEZE: {Op.UNSQUEEZE, Op.RESHAPE}, Op.MASKED_FILL: {Op.MASKED_FILL, Op.WHERE},
                Op.LOGICAL_NOT: {Op.LOGICAL_NOT}, Op.CAST: {Op.CAST}}


def test_every_op_has_a_case():
    assert set(CASES) == set(OPS), set(OPS) ^ set(CASES)


@pytest.mark.parametrize("op", list(CASES), ids=[o.value for o in CASES])
def test_op_semantics(op):
    fn, inputs, params = CASES[op]
    torch.manual_seed(0)
    m = Fn(fn, params)
    g = import_module(m, tuple(inputs))
    verify(g)
    ops = {n.op for n in g.nodes}
    assert ops & ALTERNATIVES.get(op, {op}), f"{op} not lowered: {g.op_counts()}"
    ref = m(*inputs)
    got = interpret(g, *inputs)[0]
    assert TensorType.of(got) == TensorType.of(ref)
    if ref.dtype.is_floating_point:
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(got, ref)


def _direct(op, inputs, **attrs):
    """Run an op through the IR without the frontend: builder + interpreter."""
    from sparsec.ir.graph import GraphBuilder
    b = GraphBuilder()
    names = [b.input(f"x{i}", TensorType.of(x)) for i, x in enumerate(inputs)]
    out = b.node(op, names, attrs)
    g = b.build([out])
    verify(g)
    return g, interpret(g, *inputs)[0]


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data())
def test_reductions_any_shape(shape, data):
    x = torch.randn(*shape)
    dims = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    keep = data.draw(st.booleans())
    for op, ref in [(Op.SUM, torch.sum), (Op.MEAN, torch.mean), (Op.AMAX, torch.amax)]:
        g, got = _direct(op, [x], dims=dims, keepdim=keep)
        want = ref(x, dim=dims, keepdim=keep)
        assert g.nodes[0].type == TensorType.of(want)
        torch.testing.assert_close(got, want)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(4, 9), st.integers(4, 9), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 1), st.sampled_from([1, 2]))
def test_conv2d_any_shape(n, cin, h, w, k, stride, pad, groups):
    cout = 2 * groups
    cin = cin * groups
    x, wt, b = torch.randn(n, cin, h, w), torch.randn(cout, cin // groups, k, k), torch.randn(cout)
    attrs = dict(stride=(stride, stride), padding=(pad, pad), dilation=(1, 1), groups=groups)
    g, got = _direct(Op.CONV2D, [x, wt, b], **attrs)
    want = F.conv2d(x, wt, b, stride, pad, 1, groups)
    assert g.nodes[0].type == TensorType.of(want)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.data())
def test_broadcast_binary_any_shape(shape, data):
    other = [1 if data.draw(st.booleans()) else s for s in shape][data.draw(st.integers(0, len(shape) - 1)):]
    a, b = torch.randn(*shape), torch.randn(*other)
    for op, ref in [(Op.ADD, torch.add), (Op.MUL, torch.mul), (Op.MAXIMUM, torch.maximum), (Op.LT, torch.lt)]:
        g, got = _direct(op, [a, b])
        want = ref(a, b)
        assert g.nodes[0].type == TensorType.of(want)
        assert torch.equal(got, want)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_layout_ops_any_shape(shape, data):
    x = torch.randn(*shape)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    _, got = _direct(Op.PERMUTE, [x], dims=perm)
    assert torch.equal(got, x.permute(perm))
    d = data.draw(st.integers(0, len(shape) - 1))
    s0 = data.draw(st.integers(0, shape[d]))
    _, got = _direct(Op.SLICE, [x], dim=d, start=s0, end=shape[d], step=1)
    assert torch.equal(got, x.narrow(d, s0, shape[d] - s0))
    _, got = _direct(Op.RESHAPE, [x], shape=(x.numel(),))
    assert torch.equal(got, x.reshape(-1))


def test_type_promotion_of_scalars_matches_torch():
    x16 = torch.randn(3, dtype=torch.float16)
    check(lambda a: a * 0.5 + 1, [x16], Op.MUL)
    xi = torch.arange(6).reshape(2, 3)
    check(lambda a: a * 2 + 1, [xi], Op.MUL)
    check(lambda a: a / 2, [xi], Op.DIV)
