"""One TE lowering rule per IR op.

A rule is ``rule(node, inputs, out_type, attrs) -> te.Tensor``: ``inputs`` are
``te.placeholder``s of the IR inputs' shapes/dtypes, or ``ScalarConst`` for a
0-d constant (inlined as an immediate). The rule must produce exactly
``out_type`` (the IR already ran torch's shape/dtype inference) and equal the
op's reference rule in ``sparsec.ir.ops`` (torch semantics).

Naming contract with the scheduler (``sparsec.backends.te.schedule``): the
reduction of a matmul-class op is a ``te.compute`` named ``matmul`` whose
last three loops are ``(i, j, k)`` (every loop before them is a batch loop);
conv2d's reduction is named ``conv2d`` with loops ``(n, o, y, x, rc, ry, rx)``
and its padded input ``pad``; blocks named ``pack*`` are layout copies that
must stay materialised (they make the matmul's B operand contiguous along j).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
import tvm
from tvm import te, tirx, topi

from sparsec.backends.te.fastmath import exp_f32
from sparsec.ir.errors import ModelError
from sparsec.ir.graph import Node
from sparsec.ir.ops import OPS, Op
from sparsec.ir.types import TensorType, torch_dtype

FLOATS = ("float16", "bfloat16", "float32", "float64")
HALF = ("float16", "bfloat16")


@dataclass(frozen=True)
class ScalarConst:
    """A 0-d constant input, inlined into the kernel as an immediate of ``dtype``."""

    value: Union[float, int, bool]
    dtype: str

    @property
    def shape(self) -> tuple:
        return ()


Input = Union[te.Tensor, ScalarConst]
Rule = Callable[[Node, list, TensorType, dict], te.Tensor]


class Unsupported(Exception):
    """Raised inside a rule; ``lower_node`` turns it into a ModelError naming the node."""


# -- small helpers -------------------------------------------------------------------------------

def _shape(x: Input) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _dtype(x: Input) -> str:
    return x.dtype if isinstance(x, ScalarConst) else str(x.dtype)


def _is_float(dtype: str) -> bool:
    return dtype in FLOATS


def _acc(dtype: str) -> str:
    """The dtype arithmetic runs in: half types compute in float32 (as torch's CPU kernels do)."""
    return "float32" if dtype in HALF else dtype


def _const(v, dtype: str):
    if dtype == "bool":
        return tirx.const(bool(v), "bool")
    if _is_float(dtype):
        return tirx.const(float(v), dtype)
    return tirx.const(int(v), dtype)


def _dt(e) -> str:
    """The dtype name of an expression, a tensor element (``TensorSlice``) or a tensor."""
    if isinstance(e, (te.Tensor, te.tensor.TensorSlice)):
        return str(e.dtype)
    return str(e.ty)


def _cast(e, dtype: str):
    """torch's ``.to(dtype)`` for one element: to bool is ``!= 0`` (NaN -> True), float -> int truncates."""
    src = _dt(e)
    if src == dtype:
        return e
    if isinstance(e, (tirx.IntImm, tirx.FloatImm)):
        # fold immediates with torch's conversion (300 -> int8 wraps to 44, 1e6 -> float16 is inf)
        v = torch.tensor(e.value, dtype=torch_dtype(src)).to(torch_dtype(dtype)).item()
        return _const(v, dtype)
    if dtype == "bool":
        if _is_float(src):  # TVM folds Not(x == 0) into an ordered x != 0, which is False for NaN
            return tirx.Or(e != _const(0, src), tirx.isnan(e))
        return e != _const(0, src)
    if src == "bool":
        return tirx.Select(e, _const(1, dtype), _const(0, dtype))
    return e.astype(dtype)


def _at(x: Input, idx: Sequence, out_ndim: int | None = None):
    """Element of ``x`` at output indices ``idx`` with numpy/torch right-aligned broadcasting."""
    if isinstance(x, ScalarConst):
        return _const(x.value, x.dtype)
    shape = _shape(x)
    idx = list(idx)
    n = len(idx) if out_ndim is None else out_ndim
    tail = idx[n - len(shape):] if shape else []
    ii = [0 if s == 1 else v for s, v in zip(shape, tail)]
    return x[tuple(ii)]


def _norm_dim(d: int, ndim: int) -> int:
    n = max(ndim, 1)
    if not -n <= d < n:
        raise Unsupported(f"dim {d} out of range for rank {ndim}")
    return d % n


def _meta(x: Input) -> torch.Tensor:
    return torch.empty(_shape(x), dtype=torch_dtype(_dtype(x)), device="meta")


def _result_type(a: Input, b: Input) -> str:
    """``torch.result_type`` of two inputs (0-d inputs don't promote the category)."""
    from sparsec.ir.types import dtype_of_torch
    return dtype_of_torch(torch.result_type(_meta(a), _meta(b)))


def _compute(out: TensorType, fn, name: str) -> te.Tensor:
    return te.compute(tuple(out.shape), lambda *i: fn(list(i)), name=name)


def _min_value(dtype: str):
    return tirx.const(-math.inf, dtype) if _is_float(dtype) else tirx.min_value(dtype)


def _nan_max(x, y):
    # NaN wins, as in torch.amax / max_pool2d
    if _is_float(_dt(x)):
        return tirx.Select(tirx.Or(tirx.isnan(x), x > y), x, y)
    return tirx.Max(x, y)


_MAX = te.comm_reducer(_nan_max, _min_value, name="nanmax")


def _reduce_axes(extents: Sequence[int], prefix: str) -> list:
    return [te.reduce_axis((0, int(e)), name=f"{prefix}{k}") for k, e in enumerate(extents)]


# -- elementwise ---------------------------------------------------------------------------------

def _binary(fn) -> Rule:
    """Arithmetic in the output dtype (half types in float32), then cast to the output dtype."""

    def rule(node, ins, out, attrs):
        a, b = ins
        ct = _acc(out.dtype)
        nd = len(out.shape)

        def f(i):
            # operands go to the result dtype first (a scalar is rounded/wrapped there), then compute
            x, y = (_cast(_cast(_at(t, i, nd), out.dtype), ct) for t in (a, b))
            return _cast(fn(x, y, ct, attrs), out.dtype)

        return _compute(out, f, node.op.value)

    return rule


def _add(x, y, ct, attrs, sign=1):
    alpha = attrs.get("alpha", 1)
    if ct == "bool":
        if sign < 0 or alpha != 1:
            raise Unsupported("bool subtraction / alpha")
        return tirx.Or(x, y)
    if alpha != 1:
        y = y * _const(alpha, ct)
    return x + y if sign > 0 else x - y


def _mul(x, y, ct, attrs):
    return tirx.And(x, y) if ct == "bool" else x * y


def _int_div_guard(x, y, ct, op):
    # x86 traps on /0 and INT_MIN/-1: divide by 1 there (torch raises on /0; we return 0, see docs)
    zero, one = _const(0, ct), _const(1, ct)
    safe = tirx.Select(tirx.Or(y == zero, y == _const(-1, ct)), one, y)
    q = op(x, safe)
    return tirx.Select(y == zero, zero, tirx.Select(y == _const(-1, ct), zero - x, q))


def _div(x, y, ct, attrs):
    mode = attrs["rounding_mode"]
    if mode is None:
        return x / y
    if mode not in ("trunc", "floor"):
        raise Unsupported(f"rounding_mode {mode!r}")
    if not _is_float(ct):
        if ct == "bool":
            raise Unsupported("bool division")
        return _int_div_guard(x, y, ct, tirx.truncdiv if mode == "trunc" else tirx.floordiv)
    if mode == "trunc":
        return tirx.trunc(x / y)
    # torch's div_floor_floating is the exact floor of the quotient (then rounded, -0 kept); TVM has
    # no fmod on CPU, so float32/16 divide in float64, where the quotient's floor is exact
    wide = "float64"
    q = tirx.floor(_cast(x, wide) / _cast(y, wide))
    zero = _const(0, ct)
    fl = tirx.Select(q == tirx.const(0.0, wide), tirx.copysign(zero, x / y), _cast(q, ct))
    return tirx.Select(y == zero, x / y, fl)


def _ipow(x, e: int, ct):
    result, base = _const(1, ct), x
    while e:
        if e & 1:
            result = result * base
        e >>= 1
        if e:
            base = base * base
    return result


def _pow_rule(node, ins, out, attrs):
    a, b = ins
    ct = _acc(out.dtype)
    nd = len(out.shape)
    if not _is_float(ct):
        if not (isinstance(b, ScalarConst) and isinstance(b.value, (int, bool)) and not isinstance(b.value, float)
                and int(b.value) >= 0):
            raise Unsupported("integer pow needs a non-negative integer scalar exponent")
        e = int(b.value)
        return _compute(out, lambda i: _cast(_ipow(_cast(_at(a, i, nd), ct), e, ct), out.dtype), "pow")
    if isinstance(b, ScalarConst) and float(b.value) in (2.0, 3.0, 0.5, 1.0, -1.0):
        ev = float(b.value)

        def f(i):
            x = _cast(_at(a, i, nd), ct)
            r = {2.0: lambda: x * x, 3.0: lambda: x * x * x, 0.5: lambda: tirx.sqrt(x),
                 1.0: lambda: x, -1.0: lambda: _const(1, ct) / x}[ev]()
            return _cast(r, out.dtype)

        return _compute(out, f, "pow")
    return _compute(out, lambda i: _cast(tirx.power(_cast(_at(a, i, nd), ct), _cast(_at(b, i, nd), ct)),
                                         out.dtype), "pow")


def _maximum(x, y, ct, attrs):
    if ct == "bool":
        return tirx.Or(x, y)
    if _is_float(ct):  # NaN propagates
        return tirx.Select(tirx.isnan(x), x, tirx.Select(tirx.isnan(y), y, tirx.Max(x, y)))
    return tirx.Max(x, y)


def _minimum(x, y, ct, attrs):
    if ct == "bool":
        return tirx.And(x, y)
    if _is_float(ct):
        return tirx.Select(tirx.isnan(x), x, tirx.Select(tirx.isnan(y), y, tirx.Min(x, y)))
    return tirx.Min(x, y)


def _compare(fn) -> Rule:
    def rule(node, ins, out, attrs):
        a, b = ins
        rt = _result_type(a, b)
        ct = "int8" if rt == "bool" else _acc(rt)  # ordering on bools: False < True
        nd = len(out.shape)
        return _compute(out, lambda i: fn(*(_cast(_cast(_at(t, i, nd), rt), ct) for t in (a, b))), node.op.value)

    return rule


def _ne(x, y):
    # LLVM's ordered != is False for NaN; torch's ne is True when either side is NaN
    if _is_float(_dt(x)):
        return tirx.Or(x != y, tirx.Or(tirx.isnan(x), tirx.isnan(y)))
    return x != y


def _logical(fn) -> Rule:
    def rule(node, ins, out, attrs):
        nd = len(out.shape)
        return _compute(out, lambda i: _cast(fn(*[_cast(_at(x, i, nd), "bool") for x in ins]), out.dtype),
                        node.op.value)

    return rule


def _where(node, ins, out, attrs):
    c, a, b = ins
    nd = len(out.shape)
    return _compute(out, lambda i: tirx.Select(_cast(_at(c, i, nd), "bool"), _cast(_at(a, i, nd), out.dtype),
                                               _cast(_at(b, i, nd), out.dtype)), "where")


def _masked_fill(node, ins, out, attrs):
    x, m, v = ins
    nd = len(out.shape)
    return _compute(out, lambda i: tirx.Select(_cast(_at(m, i, nd), "bool"), _cast(_at(v, i, nd), out.dtype),
                                               _cast(_at(x, i, nd), out.dtype)), "masked_fill")


def _tanh(x):
    # TVM's float32 tanh loses ~4e-4 relative accuracy near 0: evaluate in float64, odd series for tiny x
    d = x.astype("float64")
    big = tirx.tanh(d)
    small = d - d * d * d / tirx.const(3.0, "float64")
    return tirx.Select(tirx.abs(d) < tirx.const(1e-4, "float64"), small, big).astype(_dt(x))


def _sigmoid(x):
    one = _const(1, _dt(x))
    return one / (one + tirx.exp(-x))


def _gelu(x, approximate):
    ct = _dt(x)
    half, one = _const(0.5, ct), _const(1, ct)
    if approximate == "tanh":
        inner = _const(math.sqrt(2 / math.pi), ct) * (x + _const(0.044715, ct) * x * x * x)
        return half * x * (one + _tanh(inner))
    if approximate != "none":
        raise Unsupported(f"gelu approximate={approximate!r}")
    return x * half * (one + tirx.erf(x * _const(1 / math.sqrt(2), ct)))


def _erf_based(node, ins, out, attrs):
    """erf and exact gelu: float32 erf through topi.fast_erf (vectorisable, ~4e-7 relative; TVM's
    scalar erf is a libm call 100x slower), float64 through tirx.erf."""
    (x,) = ins
    ct = _acc(out.dtype)
    if not _is_float(ct):
        raise Unsupported(f"{node.op.value} on {out.dtype}")
    gelu = node.op is Op.GELU
    if gelu and attrs["approximate"] != "none":
        return _unary(lambda v, a: _gelu(v, a["approximate"]), floats_only=True)(node, ins, out, attrs)
    scale = _const(1 / math.sqrt(2), ct) if gelu else None
    arg = _compute(out, lambda i: _cast(_at(x, i), ct) * scale if gelu else _cast(_at(x, i), ct), "erf_arg")
    if ct == "float32":
        erf = topi.fast_erf(arg)
    else:
        erf = te.compute(arg.shape, lambda *i: tirx.erf(arg[i]), name="erf")
    if not gelu:
        return _compute(out, lambda i: _cast(erf[tuple(i)], out.dtype), "erf_out")
    half, one = _const(0.5, ct), _const(1, ct)
    return _compute(out, lambda i: _cast(_cast(_at(x, i), ct) * half * (one + erf[tuple(i)]), out.dtype), "gelu")


_UNARY_FLOAT = {
    Op.SQRT: tirx.sqrt,
    Op.RSQRT: lambda x: _const(1, _dt(x)) / tirx.sqrt(x),
    Op.EXP: tirx.exp,
    Op.LOG: tirx.log,
    Op.RECIPROCAL: lambda x: _const(1, _dt(x)) / x,
    Op.TANH: _tanh,
    Op.SIGMOID: _sigmoid,
    Op.SILU: lambda x: x * _sigmoid(x),
}


def _unary(fn, *, floats_only=False) -> Rule:
    def rule(node, ins, out, attrs):
        (x,) = ins
        ct = _acc(out.dtype)
        if floats_only and not _is_float(ct):
            raise Unsupported(f"{node.op.value} on {out.dtype}")
        return _compute(out, lambda i: _cast(fn(_cast(_at(x, i), ct), attrs), out.dtype), node.op.value)

    return rule


def _neg(x, attrs):
    if _dt(x) == "bool":
        raise Unsupported("neg of bool")
    return _const(0, _dt(x)) - x if not _is_float(_dt(x)) else -x


def _abs(x, attrs):
    return x if _dt(x) == "bool" else tirx.abs(x)


def _relu(x, attrs):
    zero = _const(0, _dt(x))
    if _dt(x) == "bool":
        return x
    return tirx.Select(x < zero, zero, x)  # NaN stays NaN


def _cast_rule(node, ins, out, attrs):
    (x,) = ins
    return _compute(out, lambda i: _cast(_at(x, i), out.dtype), "cast")


def _logical_not(node, ins, out, attrs):
    (x,) = ins
    return _compute(out, lambda i: _cast(tirx.Not(_cast(_at(x, i), "bool")), out.dtype), "logical_not")


# -- softmax, normalisation ------------------------------------------------------------------------

def _reduced_compute(shape, axis_extents, body, reducer, name):
    """``out[idx] = reducer(body(idx, r) over r)`` (keeps rank; reduced dims are whatever ``body`` uses)."""

    def f(*i):
        rs = _reduce_axes(axis_extents, name + "_r")
        return reducer(body(list(i), rs), axis=rs)

    return te.compute(tuple(shape), f, name=name)


def _softmax(log: bool) -> Rule:
    def rule(node, ins, out, attrs):
        (x,) = ins
        shape = _shape(x)
        if not shape:  # softmax of one element is 1, log_softmax 0 (NaN/inf stay NaN)
            ct = _acc(out.dtype)
            return _compute(out, lambda i: _cast(_cast(x[()], ct) - _cast(x[()], ct) + _const(0 if log else 1, ct),
                                                 out.dtype), node.op.value)
        d = _norm_dim(attrs["dim"], len(shape))
        ct = _acc(out.dtype)
        red = list(shape)
        red[d] = 1

        def xr(i, rs):
            j = list(i)
            j[d] = rs[0]
            return _cast(x[tuple(j)], ct)

        mx = _reduced_compute(red, [shape[d]], xr, _MAX, "softmax_max")

        # float32: a vectorisable exp (backends/te/fastmath.py; libm's is one call per element)
        exp = exp_f32 if ct == "float32" else tirx.exp

        def ex(i, rs):
            j = list(i)
            j[d] = 0
            return exp(xr(i, rs) - mx[tuple(j)])

        sm = _reduced_compute(red, [shape[d]], ex, te.sum, "softmax_sum")

        def f(i):
            j = list(i)
            j[d] = 0
            v = _cast(x[tuple(i)], ct) - mx[tuple(j)]
            r = v - tirx.log(sm[tuple(j)]) if log else exp(v) / sm[tuple(j)]
            return _cast(r, out.dtype)

        return _compute(out, f, node.op.value)

    return rule


def _layer_norm(node, ins, out, attrs):
    x, w, b = ins
    shape = _shape(x)
    ns = tuple(attrs["normalized_shape"])
    k = len(ns)
    if tuple(shape[len(shape) - k:]) != ns:
        raise Unsupported(f"normalized_shape {ns} does not end {shape}")
    lead = len(shape) - k
    n = math.prod(ns)
    ct = _acc(out.dtype)
    red = list(shape[:lead]) + [1] * k

    def xr(i, rs):
        return _cast(x[tuple(i[:lead]) + tuple(rs)], ct)

    mean = _reduced_compute(red, ns, lambda i, rs: xr(i, rs) / _const(n, ct), te.sum, "ln_mean")

    def dev(i, rs):
        v = xr(i, rs) - mean[tuple(i)]
        return v * v / _const(n, ct)

    var = _reduced_compute(red, ns, dev, te.sum, "ln_var")
    eps = _const(attrs["eps"], ct)

    def f(i):
        s = tuple(i[:lead]) + (0,) * k
        rstd = _const(1, ct) / tirx.sqrt(var[s] + eps)
        y = (_cast(x[tuple(i)], ct) - mean[s]) * rstd
        y = y * _cast(_at(w, i[lead:], k), ct) + _cast(_at(b, i[lead:], k), ct)
        return _cast(y, out.dtype)

    return _compute(out, f, "layer_norm")


def _batch_norm(node, ins, out, attrs):
    x, mean, var, w, b = ins
    if len(_shape(x)) < 2:
        raise Unsupported("batch_norm needs rank >= 2")
    ct = _acc(out.dtype)
    eps = _const(attrs["eps"], ct)

    def ch(t, i):
        return _cast(t[(i[1],)], ct)

    def f(i):
        invstd = _const(1, ct) / tirx.sqrt(ch(var, i) + eps)
        return _cast((_cast(x[tuple(i)], ct) - ch(mean, i)) * invstd * ch(w, i) + ch(b, i), out.dtype)

    return _compute(out, f, "batch_norm")


# -- pooling ---------------------------------------------------------------------------------------

def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return int(v[0]), int(v[0])
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _pool_input(x):
    shape = _shape(x)
    if len(shape) not in (3, 4):
        raise Unsupported(f"pooling needs a 3-D or 4-D NCHW input, got {shape}")
    return shape


def _max_pool(node, ins, out, attrs):
    (x,) = ins
    shape = _pool_input(x)
    kh, kw = _pair(attrs["kernel_size"])
    sh, sw = _pair(attrs["stride"] if attrs["stride"] not in (None, (), []) else attrs["kernel_size"])
    ph, pw = _pair(attrs["padding"])
    dh, dw = _pair(attrs["dilation"])
    H, W = shape[-2:]
    dt = str(x.dtype)
    lead = len(shape) - 2

    def body(i, rs):
        h = i[lead] * sh - ph + rs[0] * dh
        w = i[lead + 1] * sw - pw + rs[1] * dw
        ok = tirx.all(h >= 0, h < H, w >= 0, w < W)
        return tirx.if_then_else(ok, x[tuple(i[:lead]) + (h, w)], _min_value(dt))

    return _reduced_compute(out.shape, [kh, kw], body, _MAX, "max_pool2d")


def _avg_pool(node, ins, out, attrs):
    (x,) = ins
    shape = _pool_input(x)
    kh, kw = _pair(attrs["kernel_size"])
    sh, sw = _pair(attrs["stride"] if attrs["stride"] not in (None, (), []) else attrs["kernel_size"])
    ph, pw = _pair(attrs["padding"])
    H, W = shape[-2:]
    lead = len(shape) - 2
    ct = _acc(out.dtype)
    div_override = attrs["divisor_override"]
    cip = attrs["count_include_pad"]

    def body(i, rs):
        h = i[lead] * sh - ph + rs[0]
        w = i[lead + 1] * sw - pw + rs[1]
        ok = tirx.all(h >= 0, h < H, w >= 0, w < W)
        return tirx.if_then_else(ok, _cast(x[tuple(i[:lead]) + (h, w)], ct), _const(0, ct))

    s = _reduced_compute(out.shape, [kh, kw], body, te.sum, "avg_pool2d_sum")

    def f(i):
        # torch's divisor: the window clipped to the padded input (count_include_pad) or to the input
        h0 = i[lead] * sh - ph
        w0 = i[lead + 1] * sw - pw
        h1 = tirx.Min(h0 + kh, H + ph)
        w1 = tirx.Min(w0 + kw, W + pw)
        if div_override:
            div = _const(div_override, ct)
        elif cip:
            div = ((h1 - h0) * (w1 - w0)).astype(ct)
        else:
            div = ((tirx.Min(h1, H) - tirx.Max(h0, 0)) * (tirx.Min(w1, W) - tirx.Max(w0, 0))).astype(ct)
        return _cast(s[tuple(i)] / div, out.dtype)

    return _compute(out, f, "avg_pool2d")


def _adaptive_avg_pool(node, ins, out, attrs):
    (x,) = ins
    shape = _pool_input(x)
    H, W = shape[-2:]
    OH, OW = out.shape[-2:]
    lead = len(shape) - 2
    ct = _acc(out.dtype)

    def bounds(o, n_in, n_out):
        return tirx.floordiv(o * n_in, n_out), tirx.floordiv((o + 1) * n_in + n_out - 1, n_out)

    kh = max(-(-((o + 1) * H) // OH) - (o * H) // OH for o in range(OH)) if OH else 1
    kw = max(-(-((o + 1) * W) // OW) - (o * W) // OW for o in range(OW)) if OW else 1

    def body(i, rs):
        h0, h1 = bounds(i[lead], H, OH)
        w0, w1 = bounds(i[lead + 1], W, OW)
        h, w = h0 + rs[0], w0 + rs[1]
        return tirx.if_then_else(tirx.all(h < h1, w < w1), _cast(x[tuple(i[:lead]) + (h, w)], ct), _const(0, ct))

    s = _reduced_compute(out.shape, [kh, kw], body, te.sum, "adaptive_avg_pool2d_sum")

    def f(i):
        h0, h1 = bounds(i[lead], H, OH)
        w0, w1 = bounds(i[lead + 1], W, OW)
        return _cast(s[tuple(i)] / ((h1 - h0) * (w1 - w0)).astype(ct), out.dtype)

    return _compute(out, f, "adaptive_avg_pool2d")


# -- reductions ------------------------------------------------------------------------------------

def _reduction(kind: str) -> Rule:
    def rule(node, ins, out, attrs):
        (x,) = ins
        shape = _shape(x)
        dims = attrs["dims"]
        if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
            dims = tuple(range(len(shape)))
        elif isinstance(dims, int):
            dims = (dims,)
        dims = sorted({_norm_dim(d, len(shape)) for d in dims}) if shape else []
        keep = attrs["keepdim"]
        kept = [d for d in range(len(shape)) if d not in dims]
        ct = _acc(out.dtype)
        if kind == "amax" and ct == "bool":
            ct = "int8"
        n = math.prod(shape[d] for d in dims)

        def f(*i):
            rs = _reduce_axes([shape[d] for d in dims], "r")
            src = [None] * len(shape)
            for d, r in zip(dims, rs):
                src[d] = r
            for k, d in enumerate(kept):
                src[d] = i[d] if keep else i[k]
            v = _cast(x[tuple(src)], ct)
            if kind == "amax":
                return _MAX(v, axis=rs) if rs else v
            return te.sum(v, axis=rs) if rs else v

        red = te.compute(tuple(out.shape), f, name=f"{kind}_acc")
        if kind == "mean":
            return _compute(out, lambda i: _cast(red[tuple(i)] / _const(n, ct), out.dtype), "mean")
        if str(red.dtype) == out.dtype:
            return red
        return _compute(out, lambda i: _cast(red[tuple(i)], out.dtype), kind)

    return rule


# -- layout ----------------------------------------------------------------------------------------

def _reshape_to(x: te.Tensor, out: TensorType, name: str) -> te.Tensor:
    src = _shape(x)
    dst = tuple(out.shape)
    if math.prod(src) != math.prod(dst):
        raise Unsupported(f"cannot reshape {src} to {dst}")
    s_nz = [k for k, s in enumerate(src) if s != 1]
    d_nz = [k for k, s in enumerate(dst) if s != 1]
    if [src[k] for k in s_nz] == [dst[k] for k in d_nz]:
        # only unit dims differ (squeeze/unsqueeze): map the non-unit indices directly
        def f(i):
            j = [0] * len(src)
            for a, b in zip(s_nz, d_nz):
                j[a] = i[b]
            return x[tuple(j)]
        return _compute(out, f, name)

    def g(i):
        flat = 0
        for v, s in zip(i, dst):
            flat = flat * s + v
        j = []
        for s in reversed(src):
            j.append(tirx.floormod(flat, s))
            flat = tirx.floordiv(flat, s)
        return x[tuple(reversed(j))]

    return _compute(out, g, name)


def _reshape_rule(node, ins, out, attrs):
    return _reshape_to(ins[0], out, node.op.value)


def _permute(node, ins, out, attrs):
    (x,) = ins
    nd = len(_shape(x))
    dims = [_norm_dim(d, nd) for d in attrs["dims"]]

    def f(i):
        j = [None] * nd
        for k, d in enumerate(dims):
            j[d] = i[k]
        return x[tuple(j)]

    return _compute(out, f, "permute")


def _transpose(node, ins, out, attrs):
    (x,) = ins
    nd = len(_shape(x))
    if nd == 0:
        return _compute(out, lambda i: x[()], "transpose")
    a, b = _norm_dim(attrs["dim0"], nd), _norm_dim(attrs["dim1"], nd)

    def f(i):
        j = list(i)
        j[a], j[b] = i[b], i[a]
        return x[tuple(j)]

    return _compute(out, f, "transpose")


def _expand(node, ins, out, attrs):
    (x,) = ins
    return _compute(out, lambda i: _at(x, i, len(out.shape)), "expand")


def _slice(node, ins, out, attrs):
    (x,) = ins
    shape = _shape(x)
    d = _norm_dim(attrs["dim"], len(shape))
    size = shape[d]
    step = int(attrs["step"] or 1)
    if step <= 0:
        raise Unsupported(f"slice step {step}")
    start = attrs["start"]
    start = 0 if start is None else int(start)
    if start < 0:
        start += size
    start = min(max(start, 0), size)

    def f(i):
        j = list(i)
        j[d] = start + i[d] * step
        return x[tuple(j)]

    return _compute(out, f, "slice")


def _select(node, ins, out, attrs):
    (x,) = ins
    shape = _shape(x)
    d = _norm_dim(attrs["dim"], len(shape))
    idx = int(attrs["index"])
    if not -shape[d] <= idx < shape[d]:
        raise Unsupported(f"index {idx} out of range for dim {d} of size {shape[d]}")
    idx %= shape[d]

    def f(i):
        j = list(i)
        j.insert(d, idx)
        return x[tuple(j)]

    return _compute(out, f, "select")


def _cat(node, ins, out, attrs):
    nd = len(out.shape)
    d = _norm_dim(attrs["dim"], nd)
    parts = []
    off = 0
    for x in ins:
        s = _shape(x)
        if isinstance(x, ScalarConst) or len(s) != nd:
            if math.prod(s) == 0 and len(s) == 1:  # torch's legacy empty 1-D tensor: skipped
                continue
            raise Unsupported(f"cat input of shape {s} into rank {nd}")
        if s[d] == 0:
            continue
        parts.append((off, off + s[d], x))
        off += s[d]

    def f(i):
        expr = None
        for lo, hi, x in reversed(parts):
            j = list(i)
            j[d] = i[d] - lo
            v = _cast(x[tuple(j)], out.dtype)
            expr = v if expr is None else tirx.if_then_else(i[d] < hi, v, expr)
        return expr if expr is not None else _const(0, out.dtype)

    return _compute(out, f, "cat")


def _embedding(node, ins, out, attrs):
    w, idx = ins
    ws = _shape(w)
    if len(ws) != 2:
        raise Unsupported(f"embedding weight must be 2-D, got {ws}")
    if _dtype(idx) not in ("int64", "int32", "int16", "int8", "uint8"):
        raise Unsupported(f"embedding indices of dtype {_dtype(idx)}")
    V = ws[0]
    nd = len(_shape(idx))

    def f(i):
        r = _at(idx, i[:nd], nd) if nd else _at(idx, [])
        r = tirx.Max(tirx.Min(r.astype("int64"), tirx.const(V - 1, "int64")), tirx.const(0, "int64"))
        return w[r.astype("int32"), i[nd]]

    return _compute(out, f, "embedding")


# -- matmul class ----------------------------------------------------------------------------------

def _matmul_core(a_at, b_at, batch: Sequence[int], M: int, N: int, K: int, acc: str) -> te.Tensor:
    """``matmul[*b, i, j] = sum_k a_at(b, i, k) * b_at(b, k, j)`` accumulated in ``acc``."""
    nb = len(batch)

    def f(*idx):
        k = te.reduce_axis((0, K), name="k")
        bi, i, j = list(idx[:nb]), idx[nb], idx[nb + 1]
        return te.sum(_cast(a_at(bi, i, k), acc) * _cast(b_at(bi, k, j), acc), axis=k)

    return te.compute((*batch, M, N), f, name="matmul")


def _pack_t(w: te.Tensor) -> te.Tensor:
    """``w[O, K] -> wT[K, O]``: the B operand contiguous along the vectorised j loop."""
    O, K = _shape(w)
    return te.compute((K, O), lambda k, o: w[o, k], name="pack_wT")


def _epilogue(out: TensorType, mm: te.Tensor, fn=None, name="epilogue") -> te.Tensor:
    """The output from the matmul accumulator: reshape (1-D matmul cases), ``fn(acc, idx)``, cast."""
    if fn is None and str(mm.dtype) == out.dtype and tuple(_shape(mm)) == tuple(out.shape):
        return mm
    mshape = _shape(mm)
    if math.prod(mshape) != out.numel:
        raise Unsupported(f"matmul result {mshape} vs {out.shape}")

    def g(i):
        if tuple(mshape) == tuple(out.shape):
            j = list(i)
        else:  # unit dims inserted for 1-D operands
            nz = [k for k, s in enumerate(mshape) if s != 1]
            onz = [k for k, s in enumerate(out.shape) if s != 1]
            j = [0] * len(mshape)
            for a, b in zip(nz, onz):
                j[a] = i[b]
        v = mm[tuple(j)]
        if fn is not None:
            v = fn(v, i)
        return _cast(v, out.dtype)

    return _compute(out, g, name)


_LINEAR_ACT = {None: None, "relu": lambda v: _relu(v, None), "gelu": lambda v: _gelu(v, "none"),
               "silu": lambda v: v * _sigmoid(v)}


def _linear(node, ins, out, attrs):
    res = ins[-1] if attrs.get("residual") else None        # fused epilogue (passes.fuse)
    ins = ins[:-1] if res is not None else ins
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    xs, ws = _shape(x), _shape(w)
    if len(ws) != 2 or not xs:
        raise Unsupported(f"linear with input {xs} and weight {ws}")
    if attrs.get("activation") not in _LINEAR_ACT:
        raise Unsupported(f"linear epilogue activation {attrs.get('activation')!r}")
    act = _LINEAR_ACT[attrs.get("activation")]
    O, K = ws
    acc = _acc(out.dtype)
    lead = list(xs[:-1]) if len(xs) > 1 else [1]
    wt = _pack_t(w)

    def a_at(b, i, k):
        return x[tuple(b) + (i, k)] if len(xs) > 1 else x[(k,)]

    mm = _matmul_core(a_at, lambda b, k, j: wt[k, j], lead[:-1], lead[-1], O, K, acc)
    nd = 1 if len(xs) == 1 else len(out.shape)     # [1, O] -> [O] for a 1-D input
    if bias is None and act is None and res is None:
        return _epilogue(out, mm, None, "linear")

    def fn(v, i):
        if bias is not None:
            v = v + _cast(_at(bias, i, nd), acc)
        if act is not None:
            v = act(v)
        if res is not None:
            v = v + _cast(_at(res, i, nd), acc)
        return v

    return _epilogue(out, mm, fn, "linear")


def _batched_operands(a: Input, b: Input):
    as_, bs = _shape(a), _shape(b)
    if not as_ or not bs:
        raise Unsupported("matmul of a 0-d tensor")
    a2 = as_ if len(as_) > 1 else (1,) + as_
    b2 = bs if len(bs) > 1 else bs + (1,)
    ba, bb = a2[:-2], b2[:-2]
    nb = max(len(ba), len(bb))
    batch = []
    for k in range(nb):
        da = ba[k - nb + len(ba)] if k - nb + len(ba) >= 0 else 1
        db = bb[k - nb + len(bb)] if k - nb + len(bb) >= 0 else 1
        batch.append(max(da, db))

    def a_at(bi, i, k):
        if len(as_) == 1:
            return a[(k,)]
        sub = [0 if s == 1 else v for s, v in zip(ba, bi[nb - len(ba):])]
        return a[tuple(sub) + (i, k)]

    def b_at(bi, k, j):
        if len(bs) == 1:
            return b[(k,)]
        sub = [0 if s == 1 else v for s, v in zip(bb, bi[nb - len(bb):])]
        return b[tuple(sub) + (k, j)]

    return a_at, b_at, batch, a2[-2], b2[-1], a2[-1]


def _matmul(node, ins, out, attrs):
    a, b = ins
    a_at, b_at, batch, M, N, K = _batched_operands(a, b)
    mm = _matmul_core(a_at, b_at, batch, M, N, K, _acc(out.dtype))
    return _epilogue(out, mm, None, node.op.value)


def _addmm(node, ins, out, attrs):
    c, a, b = ins
    a_at, b_at, batch, M, N, K = _batched_operands(a, b)
    acc = _acc(out.dtype)
    mm = _matmul_core(a_at, b_at, batch, M, N, K, acc)
    alpha, beta = attrs["alpha"], attrs["beta"]
    nd = len(out.shape)

    def fn(v, i):
        if alpha != 1:
            v = v * _const(alpha, acc)
        if beta == 0:  # torch ignores c entirely (NaN/inf in c do not propagate)
            return v
        cv = _cast(_at(c, i, nd), acc)
        return v + (cv if beta == 1 else cv * _const(beta, acc))

    return _epilogue(out, mm, fn, node.op.value)


def _conv2d(node, ins, out, attrs):
    x, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    xs, ws = _shape(x), _shape(w)
    if len(xs) != 4 or len(ws) != 4:
        raise Unsupported(f"conv2d needs 4-D NCHW input and weight, got {xs} and {ws}")
    if isinstance(attrs["padding"], str):
        raise Unsupported(f"conv2d padding={attrs['padding']!r}")
    N, C, H, W = xs
    O, Cg, KH, KW = ws
    groups = int(attrs["groups"])
    sh, sw = _pair(attrs["stride"])
    ph, pw = _pair(attrs["padding"])
    dh, dw = _pair(attrs["dilation"])
    _, _, OH, OW = out.shape
    acc = _acc(out.dtype)
    Og = O // groups
    if ph or pw:
        pad = te.compute((N, C, H + 2 * ph, W + 2 * pw), lambda n, c, h, ww: tirx.if_then_else(
            tirx.all(h >= ph, h < H + ph, ww >= pw, ww < W + pw), x[n, c, h - ph, ww - pw],
            _const(0, str(x.dtype))), name="pad")
    else:
        pad = x

    def f(n, o, y, xx):
        rc = te.reduce_axis((0, Cg), name="rc")
        ry = te.reduce_axis((0, KH), name="ry")
        rx = te.reduce_axis((0, KW), name="rx")
        c = rc if groups == 1 else tirx.floordiv(o, Og) * Cg + rc
        return te.sum(_cast(pad[n, c, y * sh + ry * dh, xx * sw + rx * dw], acc) * _cast(w[o, rc, ry, rx], acc),
                      axis=[rc, ry, rx])

    conv = te.compute((N, O, OH, OW), f, name="conv2d")
    fn = None if bias is None else (lambda v, i: v + _cast(_at(bias, [i[1]], 1), acc))
    return _epilogue(out, conv, fn, "conv2d_out")


# -- the table -------------------------------------------------------------------------------------

TE_RULES: dict[Op, Rule] = {
    Op.LINEAR: _linear,
    Op.MATMUL: _matmul,
    Op.MM: _matmul,
    Op.BMM: _matmul,
    Op.ADDMM: _addmm,
    Op.BADDBMM: _addmm,
    Op.CONV2D: _conv2d,
    Op.ADD: _binary(_add),
    Op.SUB: _binary(lambda x, y, ct, a: _add(x, y, ct, a, sign=-1)),
    Op.MUL: _binary(_mul),
    Op.DIV: _binary(_div),
    Op.POW: _pow_rule,
    Op.MAXIMUM: _binary(_maximum),
    Op.MINIMUM: _binary(_minimum),
    Op.WHERE: _where,
    Op.MASKED_FILL: _masked_fill,
    Op.EQ: _compare(lambda x, y: x == y),
    Op.NE: _compare(_ne),
    Op.LT: _compare(lambda x, y: x < y),
    Op.LE: _compare(lambda x, y: x <= y),
    Op.GT: _compare(lambda x, y: x > y),
    Op.GE: _compare(lambda x, y: x >= y),
    Op.LOGICAL_AND: _logical(tirx.And),
    Op.LOGICAL_OR: _logical(tirx.Or),
    Op.NEG: _unary(_neg),
    Op.ABS: _unary(_abs),
    Op.RELU: _unary(_relu),
    Op.GELU: _erf_based,
    Op.ERF: _erf_based,
    Op.LOGICAL_NOT: _logical_not,
    Op.CAST: _cast_rule,
    Op.SOFTMAX: _softmax(False),
    Op.LOG_SOFTMAX: _softmax(True),
    Op.LAYER_NORM: _layer_norm,
    Op.BATCH_NORM: _batch_norm,
    Op.MAX_POOL2D: _max_pool,
    Op.AVG_POOL2D: _avg_pool,
    Op.ADAPTIVE_AVG_POOL2D: _adaptive_avg_pool,
    Op.MEAN: _reduction("mean"),
    Op.SUM: _reduction("sum"),
    Op.AMAX: _reduction("amax"),
    Op.RESHAPE: _reshape_rule,
    Op.FLATTEN: _reshape_rule,
    Op.UNSQUEEZE: _reshape_rule,
    Op.SQUEEZE: _reshape_rule,
    Op.PERMUTE: _permute,
    Op.TRANSPOSE: _transpose,
    Op.EXPAND: _expand,
    Op.SLICE: _slice,
    Op.SELECT: _select,
    Op.CAT: _cat,
    Op.EMBEDDING: _embedding,
}
for _op, _fn in _UNARY_FLOAT.items():
    TE_RULES[_op] = _unary((lambda f: lambda x, a: f(x))(_fn), floats_only=True)

assert set(TE_RULES) == set(Op), sorted(set(Op) - set(TE_RULES))
assert set(TE_RULES) == set(OPS)


def lower_node(node: Node, inputs: list[Input], out_type: TensorType) -> te.Tensor:
    """The TE tensor computing ``node`` from ``inputs``; exactly ``out_type``'s shape and dtype.

    Raises ``ModelError`` naming the node when the op, its attributes or its
    dtypes are not supported (never a silently different result).
    """
    rule = TE_RULES.get(node.op)
    if rule is None:
        raise ModelError(f"{node.where()}: no TE lowering for op {node.op.value}")
    try:
        out = rule(node, list(inputs), out_type, node.attr)
    except ModelError:
        raise
    except Unsupported as exc:
        raise ModelError(f"{node.where()}: not supported by the TE lowering: {exc}") from None
    except (tvm.error.InternalError, RuntimeError, ValueError, TypeError, IndexError, KeyError,
            AttributeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{node.where()}: TE lowering failed: {msg}") from exc
    if any(out.same_as(i) for i in inputs if isinstance(i, te.Tensor)):
        src = out
        out = te.compute(tuple(out_type.shape), lambda *i: src[i], name=node.op.value)
    got = TensorType(tuple(int(s) for s in out.shape), str(out.dtype))
    if got != out_type:
        raise ModelError(f"{node.where()}: TE lowering produced {got}, expected {out_type}")
    return out
