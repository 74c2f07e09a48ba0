"""LLVM CPU kernel families against eager torch on the dense equivalent.

Every case packs a random weight (drawn sparsity, edge rows, all-zero, dense),
builds the family's kernel for the host and compares
``torch.nn.functional.linear`` (+ bias, activation) on ``fmt.to_dense()``
(GroupQuant: the dequantised dense). Built kernels are cached per
(format params, shape) by ``build_matmul`` itself, so shapes are drawn from
small sets to share builds; the wide sweep is ``@pytest.mark.slow``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.backends.kernels import (
    FAMILIES, KernelError, build_conv2d, build_matmul, matmul_primfunc,
)
from sparsec.errors import SparsecError
from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant

ACTS = {None: lambda y: y, "relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def reference(x, dense_w, bias, activation):
    """Independent reference: eager torch in float64, rounded to the input dtype."""
    y = F.linear(x.double(), dense_w.double(), None if bias is None else bias.double())
    return ACTS[activation](y)


def assert_matches(y, x, w, bias, activation, rtol=1e-4):
    """Elementwise |y - ref| <= rtol * (|x| @ |w|^T + |bias|): relative to the magnitude summed."""
    ref = reference(x, w, bias, activation)
    scale = x.double().abs() @ w.double().abs().T
    if bias is not None:
        scale = scale + bias.double().abs()
    err = (y.double() - ref).abs()
    tol = rtol * scale + 1e-6
    bad = err > tol
    assert not bool(bad.any()), (f"max err {err.max().item():.3g} at {tuple(int(i) for i in bad.nonzero()[0])}, "
                                 f"tol there {tol[bad][0].item():.3g}")
    assert y.shape == ref.shape and y.dtype == x.dtype


def sparse_weight(rows, cols, density, seed, pattern="random"):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    if pattern == "zero":
        return torch.zeros(rows, cols)
    if pattern == "dense":
        return w
    keep = torch.rand(rows, cols, generator=g) < density
    if pattern == "empty_rows":          # every other row empty, first row too
        keep[::2] = False
    return w * keep


def nm_weight(rows, cols, n, m, density, seed):
    """A weight obeying n:m (at most n kept per group of m, fewer when density is low)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    G = -(-cols // m)
    pad = torch.zeros(rows, G * m)
    pad[:, :cols] = w
    grp = pad.reshape(rows, G, m)
    order = torch.rand(rows, G, m, generator=g).argsort(-1)
    rank = order.argsort(-1)
    keep = (rank < n) & (torch.rand(rows, G, 1, generator=g) < max(density, 0.0) * 2)
    return (grp * keep).reshape(rows, G * m)[:, :cols].contiguous()


def block_weight(rows, cols, r, c, density, seed):
    g = torch.Generator().manual_seed(seed)
    nbr, nbc = -(-rows // r), -(-cols // c)
    keep = torch.rand(nbr, nbc, generator=g) < density
    mask = keep.repeat_interleave(r, 0).repeat_interleave(c, 1)[:rows, :cols]
    return torch.randn(rows, cols, generator=g) * mask


def group_weight(rows, cols, group, density, seed):
    g = torch.Generator().manual_seed(seed)
    ng = -(-cols // group)
    keep = torch.rand(rows, ng, generator=g) < density
    mask = keep.repeat_interleave(group, 1)[:, :cols]
    return torch.randn(rows, cols, generator=g) * mask


def pack(kind, w_seed, rows, cols, density, pattern, params):
    if kind == "dense":
        return Dense.from_dense(sparse_weight(rows, cols, density, w_seed, pattern))
    if kind == "csr":
        return CSR.from_dense(sparse_weight(rows, cols, density, w_seed, pattern))
    if kind == "bitmap":
        return Bitmap.from_dense(sparse_weight(rows, cols, density, w_seed, pattern), tile=params["tile"])
    if kind == "nm":
        n, m = params["nm"]
        w = nm_weight(rows, cols, n, m, density, w_seed) if pattern != "zero" else torch.zeros(rows, cols)
        return NM.from_dense(w, n=n, m=m)
    if kind == "bsr":
        r, c = params["block"]
        w = block_weight(rows, cols, r, c, density, w_seed) if pattern == "random" else \
            sparse_weight(rows, cols, density, w_seed, pattern)
        return BSR.from_dense(w, block=(r, c))
    if kind == "groupquant":
        w = group_weight(rows, cols, params["group"], density, w_seed) if pattern == "random" else \
            sparse_weight(rows, cols, density, w_seed, pattern)
        return GroupQuant.from_dense(w, group=params["group"], bits=params["bits"])
    raise AssertionError(kind)


PARAMS = {
    "dense": st.just({}),
    "csr": st.just({}),
    "bitmap": st.fixed_dictionaries({"tile": st.sampled_from([(8, 8), (3, 5), (1, 16), (4, 33)])}),
    "nm": st.fixed_dictionaries({"nm": st.sampled_from([(2, 4), (1, 4), (2, 8), (3, 5)])}),
    "bsr": st.fixed_dictionaries({"block": st.sampled_from([(4, 4), (2, 3), (1, 8), (8, 1)])}),
    "groupquant": st.fixed_dictionaries({"group": st.sampled_from([8, 5, 32]), "bits": st.sampled_from([4, 8])}),
}


def check_case(kind, params, rows, cols, tokens, density, pattern, bias, activation, seed, knobs=None):
    fmt = pack(kind, seed, rows, cols, density, pattern, params)
    kern = build_matmul(fmt, tokens, bias=bias, activation=activation, knobs=knobs)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(tokens, cols, generator=g)
    b = torch.randn(rows, generator=g) if bias else None
    y = kern.run_format(x, fmt, bias=b)
    assert_matches(y, x, fmt.to_dense().reshape(rows, cols), b, activation)


# Small shape sets so hypothesis examples share compiled kernels.
ROWS = st.sampled_from([1, 3, 8, 17])
COLS = st.sampled_from([1, 5, 16, 33])
TOKENS = st.sampled_from([1, 3, 16, 20])


@pytest.mark.parametrize("kind", sorted(PARAMS))
@settings(max_examples=10)
@given(data=st.data(), rows=ROWS, cols=COLS, tokens=TOKENS,
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       pattern=st.sampled_from(["random", "random", "empty_rows", "zero", "dense"]),
       bias=st.booleans(), activation=st.sampled_from(list(ACTS)), seed=st.integers(0, 2**16))
def test_matmul_matches_torch(kind, data, rows, cols, tokens, density, pattern, bias, activation, seed):
    params = data.draw(PARAMS[kind])
    check_case(kind, params, rows, cols, tokens, density, pattern, bias, activation, seed)


@pytest.mark.parametrize("kind,params", [
    ("dense", {}), ("csr", {}), ("bitmap", {"tile": (8, 8)}), ("nm", {"nm": (2, 4)}),
    ("bsr", {"block": (4, 4)}), ("groupquant", {"group": 16, "bits": 4}),
])
@pytest.mark.parametrize("tokens", [1, 37])
def test_bert_like_shape(kind, params, tokens):
    """A non-toy shape: many token tiles, long rows, K not a multiple of the block/M/tile/group."""
    check_case(kind, params, 70, 203, tokens, 0.2, "random", True, None, seed=7)


@pytest.mark.parametrize("kind,params,knobs", [
    ("csr", {}, {"t_tile": 8}),                                   # 20 tokens: two tiles + tail
    ("csr", {}, {"strategy": "tokens", "parallel": False}),       # T = 1 through the token path
    ("nm", {"nm": (2, 4)}, {"unroll_groups": 4, "t_tile": 16}),
    ("nm", {"nm": (2, 4)}, {"strategy": "tokens"}),
    ("bsr", {"block": (4, 4)}, {"unroll_block": False, "t_tile": 16}),
    ("bitmap", {"tile": (8, 8)}, {"unroll_rows": False, "t_tile": 8}),
    ("bitmap", {"tile": (8, 8)}, {"walk": "rows"}),               # the row walk (default: tile at tc <= 8)
    ("bitmap", {"tile": (4, 33)}, {"walk": "tile", "t_tile": 8}),  # 132 bits: three 64-bit words a tile
    ("bitmap", {"tile": (16, 16)}, {"walk": "tile"}),              # 17 rows: a partial tile row
    ("groupquant", {"group": 32, "bits": 4}, {"unroll_group": False, "t_tile": 16}),
    ("groupquant", {"group": 32, "bits": 8}, {"lanes": 8}),
    ("dense", {}, {"row_block": 1, "t_tile": 8}),
    ("dense", {}, {"row_block": 12}),                             # 17 rows: a 12-row block + 5 edge rows
    ("dense", {}, {"row_block": 6, "lanes": 8}),                  # gemv: 45 = 5 x 8 + 5 tail columns
])
@pytest.mark.parametrize("tokens", [1, 20])
def test_non_default_knobs(kind, params, knobs, tokens):
    if knobs.get("strategy") == "gemv" and tokens != 1:
        pytest.skip("gemv is T = 1 only")
    check_case(kind, params, 17, 45, tokens, 0.4, "random", True, "relu", seed=3, knobs=knobs)


def test_every_family_declares_knobs_as_data():
    for name, fam in FAMILIES.items():
        assert fam.format == name
        assert fam.x_layout == "KT" and fam.y_layout == "OT"
        for knob in fam.knobs:
            assert knob.name and isinstance(knob.candidates, tuple) and knob.candidates
            assert knob.default is None or knob.default in knob.candidates


def test_primfunc_argument_order_is_format_buffers_then_xt_bias_yt():
    fmt = GroupQuant.from_dense(group_weight(9, 40, 8, 0.5, 1), group=8, bits=4)
    func, args, knobs = matmul_primfunc(fmt, 5, bias=True, activation="gelu")
    assert [a.name for a in args] == list(fmt.buffers) + ["XT", "bias", "YT"]
    assert [p.name for p in func.params] == [a.name for a in args]
    assert args[-2].shape == (9,) and args[-3].shape == (40, 5) and args[-1].shape == (9, 5)
    assert knobs["strategy"] == "tokens"
    _, args, _ = matmul_primfunc(CSR.from_dense(torch.eye(4)), 1)
    assert [a.name for a in args] == ["indptr", "indices", "values", "XT", "YT"]


def test_batched_matmul_folds_batch_into_tokens():
    w = sparse_weight(24, 40, 0.2, 5)
    fmt = CSR.from_dense(w)
    x = torch.randn(3, 7, 40)
    kern = build_matmul(fmt, 3 * 7)
    y = kern.run_format(x.reshape(-1, 40), fmt).reshape(3, 7, 24)
    assert_matches(y.reshape(-1, 24), x.reshape(-1, 40), w, None, None)
    torch.testing.assert_close(y, torch.matmul(x, w.T), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("kind", ["csr", "nm", "bsr", "bitmap"])
def test_half_precision_inputs_accumulate_in_fp32(kind, dtype, rtol):
    params = {"nm": {"nm": (2, 4)}, "bsr": {"block": (4, 4)}, "bitmap": {"tile": (8, 8)}}.get(kind, {})
    fmt32 = pack(kind, 11, 20, 48, 0.3, "random", params)
    w = fmt32.to_dense().to(dtype)
    fmt = type(fmt32).from_dense(w, **{k: v for k, v in
                                      {"n": getattr(fmt32, "n", None), "m": getattr(fmt32, "m", None),
                                       "block": getattr(fmt32, "block", None), "tile": getattr(fmt32, "tile", None)
                                       }.items() if v is not None})
    x = torch.randn(9, 48).to(dtype)
    b = torch.randn(20).to(dtype)
    y = build_matmul(fmt, 9, bias=True).run_format(x, fmt, bias=b)
    assert y.dtype == dtype
    assert_matches(y.float(), x.float(), w.float(), b.float(), None, rtol=rtol)


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", [
    ((1, 3, 8, 9), 3, 1, 1, 1),
    ((2, 4, 7, 7), 3, 2, 0, 1),
    ((1, 8, 5, 5), 1, 1, 0, 1),           # pointwise: no im2col
    ((2, 3, 9, 6), (2, 3), (1, 2), (1, 0), (2, 1)),
])
@pytest.mark.parametrize("kind", ["csr", "bsr"])
def test_conv2d_im2col_matches_torch(shape, kernel, stride, padding, dilation, kind):
    n, c, h, wd = shape
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = sparse_weight(6, c * kh * kw, 0.3, 2).reshape(6, c, kh, kw)
    fmt = CSR.from_dense(w) if kind == "csr" else BSR.from_dense(w, block=(2, 2))
    conv = build_conv2d(fmt, shape, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                        bias=True, activation="relu")
    x, b = torch.randn(*shape), torch.randn(6)
    y = conv.run_format(x, fmt, bias=b)
    ref = F.relu(F.conv2d(x.double(), w.double(), b.double(), stride=stride, padding=padding, dilation=dilation))
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_errors_name_what_is_wrong():
    fmt = CSR.from_dense(torch.eye(4))
    with pytest.raises(KernelError, match="knob"):
        build_matmul(fmt, 2, knobs={"nope": 1})
    with pytest.raises(KernelError, match="t_tile"):
        build_matmul(fmt, 2, knobs={"t_tile": 7})
    with pytest.raises(KernelError, match="gemv"):
        build_matmul(fmt, 2, knobs={"strategy": "gemv"})
    with pytest.raises(KernelError, match="activation"):
        build_matmul(fmt, 2, activation="tanh")
    with pytest.raises(KernelError, match="tokens"):
        build_matmul(fmt, 0)
    kern = build_matmul(fmt, 2)
    with pytest.raises(KernelError, match="XT"):
        kern.run_t(torch.randn(3, 2), *fmt.arrays().values())
    with pytest.raises(KernelError, match="bias"):
        kern.run_format(torch.randn(2, 4), fmt, bias=torch.ones(4))
    with pytest.raises(KernelError, match="groups"):
        build_conv2d(fmt, (1, 4, 3, 3), kernel=1, groups=2)
    with pytest.raises(SparsecError, match="target kind"):
        matmul_primfunc(fmt, 2, target={"kind": "c"})


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(PARAMS))
@settings(max_examples=60)
@given(data=st.data(), rows=st.integers(1, 80), cols=st.integers(1, 150), tokens=st.integers(1, 70),
       density=st.floats(0.0, 1.0), pattern=st.sampled_from(["random", "empty_rows", "zero", "dense"]),
       bias=st.booleans(), activation=st.sampled_from(list(ACTS)), seed=st.integers(0, 2**16))
def test_matmul_sweep(kind, data, rows, cols, tokens, density, pattern, bias, activation, seed):
    params = data.draw(PARAMS[kind])
    check_case(kind, params, rows, cols, tokens, density, pattern, bias, activation, seed)


@settings(max_examples=25)
@given(nm=st.sampled_from([(2, 4), (1, 4), (2, 8), (4, 16), (3, 5), (1, 2), (7, 8)]),
       rows=st.sampled_from([1, 5, 8, 13, 19]), cols=st.sampled_from([1, 3, 16, 35, 70]),
       tokens=st.sampled_from([2, 16, 20, 33]), row_block=st.sampled_from([None, 1, 2, 4, 6, 8]),
       t_tile=st.sampled_from([None, 8, 16]), unroll_groups=st.sampled_from([1, 2]),
       pattern=st.sampled_from(["random", "empty_rows", "zero", "dense"]),
       density=st.sampled_from([0.0, 0.3, 1.0]), seed=st.integers(0, 2**16))
def test_nm_row_blocked_tokens_any_n_m(nm, rows, cols, tokens, row_block, t_tile, unroll_groups, pattern,
                                       density, seed):
    """The row-blocked N:M token kernel: any n:m, rows not a multiple of the block, K not of m,
    tokens not of the tile, vs torch on the densified weight."""
    knobs = {"row_block": row_block, "t_tile": t_tile, "unroll_groups": unroll_groups}
    check_case("nm", {"nm": nm}, rows, cols, tokens, density, pattern, True, None, seed, knobs=knobs)
