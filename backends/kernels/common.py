"""What every matmul kernel family shares: the problem spec, knobs, weight metadata,
argument lists and the bias/activation epilogue.

The problem of every family is ``Y = act(X @ W^T + bias)`` with ``X[T, K]``,
``W[O, K]`` stored in one format of ``sparsec.ir.formats`` and ``Y[T, O]``.
Families compute it in the *feature-major* layout: they read ``XT[K, T]``
and write ``YT[O, T]`` (the token dimension contiguous, so it is the vector
dimension, and one layer's ``YT`` is the next layer's ``XT``). ``X_LAYOUT`` /
``Y_LAYOUT`` name these layouts for the executor, which transposes at the
edges of a chain of such ops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from sparsec.ir.errors import ParameterError
from sparsec.ir.formats import SparseFormat, dtype_name

X_LAYOUT = "KT"   # activation in: XT[K, T] (T contiguous)
Y_LAYOUT = "OT"   # activation out: YT[O, T]
ACTIVATIONS = (None, "relu", "gelu", "silu")
DTYPES = ("float32", "float16", "bfloat16")


class KernelError(ParameterError):
    """A kernel cannot be generated for the requested format, parameters, shape or knobs."""


@dataclass(frozen=True)
class Knob:
    """One tunable parameter of a family: the values an autotuner may try.

    ``default`` is used when the caller gives none; ``None`` as default means
    the target's schedule derives it from the shape (the value it picked is
    reported in ``CompiledKernel.knobs``).
    """

    name: str
    candidates: tuple
    default: Any
    doc: str = ""


@dataclass(frozen=True)
class MatmulSpec:
    """The shape-specialised problem: ``YT[O, T] = act(W[O, K] @ XT[K, T] + bias[O])``."""

    tokens: int
    out_features: int
    in_features: int
    bias: bool = False
    activation: str | None = None
    dtype: str = "float32"
    residual: bool = False     # ``YT += RT[O, T]`` after the activation (``fuse_residual``)

    def __post_init__(self):
        for name in ("tokens", "out_features", "in_features"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise KernelError(f"matmul spec: {name} must be a positive int, got {v!r}")
        if self.activation not in ACTIVATIONS:
            raise KernelError(f"matmul spec: activation {self.activation!r} is not one of "
                              f"{', '.join(str(a) for a in ACTIVATIONS)}")
        if self.dtype not in DTYPES:
            raise KernelError(f"matmul spec: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class WeightMeta:
    """What a kernel depends on in a weight: format, matrix shape, params, buffer dtypes.

    Not the values, nor nnz (nnz-sized buffers are symbolic in the kernels), so
    one compiled kernel serves every weight with the same meta.
    """

    format: str
    rows: int
    cols: int
    dtype: str
    params: tuple                      # ((name, value), ...) in the format's order
    buffer_dtypes: tuple               # ((buffer, dtype name), ...) in the format's order

    @classmethod
    def of(cls, fmt: SparseFormat) -> "WeightMeta":
        if not isinstance(fmt, SparseFormat):
            raise KernelError(f"expected a sparsec.ir.formats object as the weight, got {type(fmt).__name__}")
        params = tuple((p, tuple(v) if isinstance(v, (list, tuple)) else v)
                       for p, v in ((p, getattr(fmt, p)) for p in fmt.params))
        return cls(fmt.name, fmt.rows, fmt.cols, dtype_name(fmt.dtype), params,
                   tuple((b, dtype_name(getattr(fmt, b).dtype)) for b in fmt.buffers))

    def param(self, name: str):
        return dict(self.params)[name]

    def bdtype(self, buffer: str) -> str:
        return dict(self.buffer_dtypes)[buffer]

    @property
    def buffers(self) -> tuple[str, ...]:
        return tuple(b for b, _ in self.buffer_dtypes)


@dataclass(frozen=True)
class Arg:
    """One PrimFunc argument: name, dtype and shape (ints; a str is a symbolic size)."""

    name: str
    dtype: str
    shape: tuple


def matmul_args(meta: WeightMeta, spec: MatmulSpec, buffer_shapes: dict[str, tuple]) -> list[Arg]:
    """The argument order of every matmul PrimFunc: weight buffers (format order), XT, [bias], YT."""
    args = [Arg(b, meta.bdtype(b), tuple(buffer_shapes[b])) for b in meta.buffers]
    args.append(Arg("XT", spec.dtype, (spec.in_features, spec.tokens)))
    if spec.bias:
        args.append(Arg("bias", spec.dtype, (spec.out_features,)))
    if spec.residual:
        args.append(Arg("RT", spec.dtype, (spec.out_features, spec.tokens)))
    args.append(Arg("YT", spec.dtype, (spec.out_features, spec.tokens)))
    return args


def fuse_residual(func, spec: MatmulSpec):
    """``func`` with the residual epilogue: every store ``YT[i] = v`` becomes ``YT[i] = v + RT[i]``.

    Applied to any family's kernel after it is generated, so every format gets the same
    epilogue ``YT = act(W @ XT + bias) + RT`` without each family spelling it out. The add is
    in fp32 and rounded once to the output dtype. The kernel must write ``YT`` only (a family
    that accumulated into ``YT`` would add the residual twice): one that reads it is refused.
    The TVM in use exposes no Python statement mutator, so the rewrite goes through the
    function's TVMScript text, which round-trips exactly; the result is re-parsed and checked.
    """
    import re

    import tvm

    text = func.script()
    store = re.compile(r"^(\s*)YT\[(.+?)\] = (.+)$")
    head = re.compile(r"YT: T\.Buffer\(")
    lines, stores = [], 0
    for ln in text.splitlines():
        m = store.match(ln)
        if m:
            ind, idx, val = m.groups()
            if "YT[" in val:
                raise KernelError(f"residual epilogue: the {spec.dtype} kernel reads YT in its store "
                                  f"({ln.strip()[:80]}); only write-only outputs can take a residual")
            if spec.dtype == "float32":
                ln = f"{ind}YT[{idx}] = {val} + RT[{idx}]"
            else:
                ln = (f'{ind}YT[{idx}] = T.Cast("{spec.dtype}", T.Cast("float32", {val}) + '
                      f'T.Cast("float32", RT[{idx}]))')
            stores += 1
        elif "YT[" in ln:
            raise KernelError(f"residual epilogue: the kernel reads YT ({ln.strip()[:80]}); "
                              f"only write-only outputs can take a residual")
        elif head.search(ln):
            shape = f"({spec.out_features}, {spec.tokens})"
            ln = head.sub(f'RT: T.Buffer({shape}, "{spec.dtype}"), YT: T.Buffer(', ln, count=1)
        lines.append(ln)
    if stores == 0:
        raise KernelError("residual epilogue: the kernel has no store to YT")
    out = tvm.script.from_source("\n".join(lines))
    if [p.name for p in out.params][-2:] != ["RT", "YT"]:
        raise KernelError(f"residual epilogue: unexpected parameters {[p.name for p in out.params]}")
    return out


def epilogue(activation: str | None) -> Callable:
    """``f(v) -> expr``: the activation applied to an fp32 TIR expression."""
    from tvm import tirx

    if activation is None:
        return lambda v: v
    if activation == "relu":
        return lambda v: tirx.max(v, tirx.const(0.0, "float32"))
    if activation == "gelu":    # exact (erf) GELU, torch's default, with a vectorisable erf
        return lambda v: tirx.const(0.5, "float32") * v * (
            tirx.const(1.0, "float32") + erf_rational(v * tirx.const(1.0 / math.sqrt(2.0), "float32")))
    if activation == "silu":
        return lambda v: v / (tirx.const(1.0, "float32") + tirx.exp(-v))
    raise KernelError(f"unknown activation {activation!r}")


# erf(x) ~ x·P(x²)/Q(x²) on [-4, 4] (erf(±4) = ±1 to float32 precision): a minimax
# rational approximation of degree (13, 8), max abs error ~1e-7 in float32. A
# polynomial, so LLVM vectorises it (tirx.erf is a scalar libm call per element,
# which made a fused-gelu matmul ~10x slower than the matmul itself).
_ERF_P = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)
_ERF_Q = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05)


def erf_rational(v):
    """float32 erf of a TIR expression, vectorisable (see the coefficients above)."""
    from tvm import tirx

    f = lambda c: tirx.const(c, "float32")
    x = tirx.max(tirx.min(v, f(4.0)), f(-4.0))
    x2 = x * x
    p = f(_ERF_P[-1])
    for c in reversed(_ERF_P[:-1]):
        p = p * x2 + f(c)
    q = f(_ERF_Q[-1])
    for c in reversed(_ERF_Q[:-1]):
        q = q * x2 + f(c)
    return x * p / q


def drop_param(func, name: str):
    """``func`` without parameter ``name`` (used when a template's optional buffer is absent)."""
    from tvm import tirx

    keep = [p for p in func.params if p.name != name]
    if len(keep) == len(func.params):
        return func
    # 0.27: a parameter carries its buffer in its type; there is no separate buffer_map
    return tirx.PrimFunc(keep, func.body, func.ret_type, func.attrs)


def check_meta(meta: WeightMeta, spec: MatmulSpec, family: str) -> None:
    if meta.format != family:
        raise KernelError(f"{family} kernel: weight is in format {meta.format!r}")
    if (meta.rows, meta.cols) != (spec.out_features, spec.in_features):
        raise KernelError(f"{family} kernel: weight matrix is {meta.rows}x{meta.cols}, spec wants "
                          f"O x K = {spec.out_features}x{spec.in_features}")
    if meta.dtype != spec.dtype:
        raise KernelError(f"{family} kernel: weight dtype {meta.dtype} != activation dtype {spec.dtype}")


class MatmulFamily:
    """One kernel family: the algorithm for one weight format.

    Subclasses set ``format`` and ``knobs`` and implement ``buffer_shapes``
    (the shape of each format buffer, symbolic sizes as str) and ``algorithm``
    (the TIR, with the loop kinds and factors of a target ``plan``).
    """

    format: ClassVar[str] = ""
    knobs: ClassVar[tuple[Knob, ...]] = ()
    x_layout: ClassVar[str] = X_LAYOUT
    y_layout: ClassVar[str] = Y_LAYOUT

    @classmethod
    def knob_space(cls) -> dict[str, Knob]:
        return {k.name: k for k in cls.knobs}

    @classmethod
    def check_knobs(cls, knobs: dict | None) -> dict:
        knobs = dict(knobs or {})
        space = cls.knob_space()
        for name, value in knobs.items():
            if name not in space:
                raise KernelError(f"{cls.format} kernel: unknown knob {name!r}; knobs are {', '.join(space)}")
            if value is not None and value not in space[name].candidates:
                raise KernelError(f"{cls.format} kernel: knob {name}={value!r} is not one of "
                                  f"{space[name].candidates}")
        return {k.name: knobs.get(k.name, k.default) for k in cls.knobs}

    def check(self, meta: WeightMeta) -> None:
        """Refuse format parameters the family cannot handle (default: all accepted)."""

    def acc_rows(self, meta: WeightMeta, knobs: dict) -> int:
        """Output rows one accumulator tile holds (sizes the token tile to the registers)."""
        return 1

    def resolve_knobs(self, meta: WeightMeta, spec: MatmulSpec, knobs: dict, lanes: int) -> None:
        """Fill in family-specific knobs left to the schedule (``None``), in place."""

    def buffer_shapes(self, meta: WeightMeta) -> dict[str, tuple]:
        raise NotImplementedError

    def algorithm(self, meta: WeightMeta, spec: MatmulSpec, plan):
        raise NotImplementedError


def loader(dtype: str):
    """Activation/weight values are accumulated in fp32."""
    from tvm import tirx

    if dtype == "float32":
        return lambda e: e
    return lambda e: tirx.Cast("float32", e)


def storer(dtype: str):
    from tvm import tirx

    if dtype == "float32":
        return lambda e: e
    return lambda e: tirx.Cast(dtype, e)


def token_tiles(tokens: int, tile: int) -> tuple[int, int]:
    """(number of full tiles, size of the tail tile) for the token dimension."""
    return tokens // tile, tokens % tile


STRATEGY = Knob("strategy", ("tokens", "gemv"), None,
                "tokens: vectorise over tokens; gemv (T = 1 only): vectorise over the reduction")
T_TILE = Knob("t_tile", (8, 16, 32, 48, 64, 96, 128, 192, 256), None,
              "tokens per accumulator tile (default: what fits the vector registers)")
# None: the size rule of ``parallelism.py`` (serial when the pool's wake-up costs more than the
# split saves); the tuner tries True and False.
PARALLEL = Knob("parallel", (True, False), None,
                "outer row loop over the thread pool (default: when the estimated serial time is long "
                "enough, parallelism.PARALLEL_MIN_US)")


def meta_of(weight) -> WeightMeta:
    return weight if isinstance(weight, WeightMeta) else WeightMeta.of(weight)


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["X_LAYOUT", "Y_LAYOUT", "ACTIVATIONS", "KernelError", "Knob", "MatmulSpec", "WeightMeta", "Arg",
           "matmul_args", "epilogue", "drop_param", "check_meta", "MatmulFamily", "meta_of", "torch_dtype",
           "ceil_div", "loader", "storer", "token_tiles", "STRATEGY", "T_TILE", "PARALLEL"]


def pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p

