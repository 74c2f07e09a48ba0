"""Vectorisable float32 transcendental expressions for TIR.

LLVM lowers ``tirx.exp`` on x86 to one libm call per element, which made
softmax ~10x slower than its memory traffic. ``exp_f32`` is a polynomial
with an exponent built by bit manipulation, so the loop vectorises:

    n = round(x / ln 2),  r = x − n·ln 2  ∈ [−ln2/2, ln2/2]
    (ln 2 split in a high part exact in float32 and a low part, so r is exact)
    e^r = Σ_{k<=8} r^k / k!            (truncation error < 1e-9 relative)
    2^n = bits((n + 127) << 23) as float32

x is clamped to [−87.3, 88.7] (the normal float32 range: e^x below that is
returned as ~1e-38 instead of a denormal or 0); NaN propagates.
"""
from __future__ import annotations

import math

_LN2_HI = 0.693359375            # 0x3f318000: few mantissa bits, so n·_LN2_HI is exact
_LN2_LO = math.log(2.0) - _LN2_HI


def exp_f32(v):
    from tvm import tirx

    f32 = lambda c: tirx.const(c, "float32")
    x = tirx.max(tirx.min(v, f32(88.7)), f32(-87.3))
    n = tirx.floor(x * f32(1.0 / math.log(2.0)) + f32(0.5))
    r = x - n * f32(_LN2_HI) - n * f32(_LN2_LO)
    p = f32(1.0 / math.factorial(8))
    for k in range(7, -1, -1):
        p = p * r + f32(1.0 / math.factorial(k))
    scale = tirx.reinterpret("float32", tirx.shift_left(tirx.Cast("int32", n) + tirx.const(127, "int32"),
                                                        tirx.const(23, "int32")))
    return tirx.if_then_else(tirx.isnan(v), v, p * scale)
