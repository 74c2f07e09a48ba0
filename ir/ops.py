"""The closed op set of sparsec's IR and each op's reference semantics.

Every op has one entry in ``OPS``: its arity, its attributes (with defaults) and
its reference rule, a function ``(inputs: list[torch.Tensor], attrs) -> Tensor``
written with torch semantics. The reference rule is the executable spec:

- the reference interpreter (``sparsec.ir.interpret``) runs it on real tensors,
- shape/dtype inference (``infer_type``) runs it on ``meta`` tensors, so the
  two can never disagree,
- every backend and the simulators' functional modes are tested against it.

Scalars in the source program (``x * 0.5``) become 0-d constants, which take
part in torch's type promotion exactly as Python scalars do. Optional inputs
are trailing (``linear(x, w)`` or ``linear(x, w, b)``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as Fn

from sparsec.ir.errors import ModelError
from sparsec.ir.types import TensorType, dtype_of_torch, torch_dtype


class Op(str, enum.Enum):
    # -- matmul class (the sparsifiable ops: the weight is operand 1) --
    LINEAR = "linear"            # (x, w[, b][, r]) y = act(x @ w.T + b) [+ r], w is [out, in]; activation
    #                              none|relu|gelu|silu; residual=True: r (the last input, y's shape and dtype) added
    MATMUL = "matmul"            # (a, b) torch.matmul broadcasting semantics
    MM = "mm"                    # (a, b) 2-D
    BMM = "bmm"                  # (a, b) 3-D batched
    ADDMM = "addmm"              # (c, a, b) beta*c + alpha*(a @ b)
    BADDBMM = "baddbmm"          # (c, a, b) beta*c + alpha*bmm(a, b)
    CONV2D = "conv2d"            # (x, w[, b]) NCHW, w is [out, in/groups, kh, kw]
    # -- elementwise binary (broadcasting, torch type promotion) --
    ADD = "add"                  # a + alpha*b
    SUB = "sub"                  # a - alpha*b
    MUL = "mul"
    DIV = "div"                  # rounding_mode None | "trunc" | "floor"
    POW = "pow"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    WHERE = "where"              # (cond, a, b)
    MASKED_FILL = "masked_fill"  # (x, mask, value0d)
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    LOGICAL_AND = "logical_and"
    LOGICAL_OR = "logical_or"
    # -- elementwise unary --
    NEG = "neg"
    ABS = "abs"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    EXP = "exp"
    LOG = "log"
    ERF = "erf"
    RECIPROCAL = "reciprocal"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    GELU = "gelu"                # approximate "none" | "tanh"
    SILU = "silu"
    LOGICAL_NOT = "logical_not"
    CAST = "cast"                # dtype
    # -- normalisation, softmax --
    SOFTMAX = "softmax"          # dim
    LOG_SOFTMAX = "log_softmax"  # dim
    LAYER_NORM = "layer_norm"    # (x, w, b) normalized_shape, eps
    BATCH_NORM = "batch_norm"    # (x, mean, var, w, b) eps; inference form
    # -- pooling (NCHW) --
    MAX_POOL2D = "max_pool2d"
    AVG_POOL2D = "avg_pool2d"
    ADAPTIVE_AVG_POOL2D = "adaptive_avg_pool2d"
    # -- reductions --
    MEAN = "mean"                # dims, keepdim
    SUM = "sum"                  # dims, keepdim
    AMAX = "amax"                # dims, keepdim
    # -- layout --
    RESHAPE = "reshape"          # shape (view, reshape, _unsafe_view)
    PERMUTE = "permute"          # dims
    TRANSPOSE = "transpose"      # dim0, dim1
    EXPAND = "expand"            # shape
    FLATTEN = "flatten"          # start_dim, end_dim
    UNSQUEEZE = "unsqueeze"      # dim
    SQUEEZE = "squeeze"          # dims
    SLICE = "slice"              # dim, start, end, step (split lowers to slices)
    SELECT = "select"            # dim, index
    CAT = "cat"                  # (x0, x1, ...) dim
    # -- lookup --
    EMBEDDING = "embedding"      # (weight, indices)


@dataclass(frozen=True)
class OpDef:
    op: Op
    arity: tuple[int, int]               # (min inputs, max inputs); max -1 = any
    attrs: dict[str, Any]                # attribute name -> default (REQUIRED = must be given)
    rule: Callable[[list[torch.Tensor], dict], torch.Tensor]
    sparsifiable: bool = False           # operand 1 may be a sparse weight


REQUIRED = object()
OPS: dict[Op, OpDef] = {}

# The matmul-class ops and which operand is the (possibly sparse) weight.
WEIGHT_OPERAND = {Op.LINEAR: 1, Op.CONV2D: 1, Op.MATMUL: 1, Op.MM: 1, Op.BMM: 1, Op.ADDMM: 2, Op.BADDBMM: 2}


def _reg(op: Op, arity, rule, sparsifiable=False, **attrs):
    if isinstance(arity, int):
        arity = (arity, arity)
    OPS[op] = OpDef(op, arity, attrs, rule, sparsifiable)


def _t(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


# matmul class
# A linear node may carry a fused epilogue (set by the fusion pass): an activation, then a
# residual add of its last input, which must have the output's exact shape and dtype (no
# broadcasting, no promotion: the kernels add it elementwise in the output layout).
EPILOGUES = {None: lambda y: y, "relu": torch.relu, "gelu": Fn.gelu, "silu": Fn.silu}


def _linear_rule(i, a):
    if a["activation"] not in EPILOGUES:
        raise ModelError(f"linear: unknown epilogue activation {a['activation']!r}")
    if a["residual"] not in (False, True):
        raise ModelError(f"linear: residual must be true or false, got {a['residual']!r}")
    if not a["residual"]:
        if len(i) > 3:
            raise ModelError(f"linear: {len(i)} inputs without residual=True (x, w[, b] expected)")
        return EPILOGUES[a["activation"]](Fn.linear(*i))
    if len(i) < 3:
        raise ModelError("linear: residual=True needs the residual as the last input (x, w[, b], r)")
    *lin, r = i
    y = EPILOGUES[a["activation"]](Fn.linear(*lin))
    if tuple(r.shape) != tuple(y.shape) or r.dtype != y.dtype:
        raise ModelError(f"linear: the residual must match the output exactly: got {r.dtype} "
                         f"{list(r.shape)} for an output {y.dtype} {list(y.shape)}")
    return y + r


_reg(Op.LINEAR, (2, 4), _linear_rule, sparsifiable=True, activation=None, residual=False)
_reg(Op.MATMUL, 2, lambda i, a: torch.matmul(*i), sparsifiable=True)
_reg(Op.MM, 2, lambda i, a: torch.mm(*i), sparsifiable=True)
_reg(Op.BMM, 2, lambda i, a: torch.bmm(*i), sparsifiable=True)
_reg(Op.ADDMM, 3, lambda i, a: torch.addmm(*i, beta=a["beta"], alpha=a["alpha"]), sparsifiable=True,
     beta=1, alpha=1)
_reg(Op.BADDBMM, 3, lambda i, a: torch.baddbmm(*i, beta=a["beta"], alpha=a["alpha"]), sparsifiable=True,
     beta=1, alpha=1)
_reg(Op.CONV2D, (2, 3), lambda i, a: Fn.conv2d(i[0], i[1], i[2] if len(i) > 2 else None, _t(a["stride"]),
                                                 _t(a["padding"]), _t(a["dilation"]), a["groups"]),
     sparsifiable=True, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)

# elementwise binary
_reg(Op.ADD, 2, lambda i, a: torch.add(*i, alpha=a["alpha"]) if a["alpha"] != 1 else torch.add(*i), alpha=1)
_reg(Op.SUB, 2, lambda i, a: torch.sub(*i, alpha=a["alpha"]) if a["alpha"] != 1 else torch.sub(*i), alpha=1)
_reg(Op.MUL, 2, lambda i, a: torch.mul(*i))
_reg(Op.DIV, 2, lambda i, a: torch.div(*i, rounding_mode=a["rounding_mode"]), rounding_mode=None)
_reg(Op.POW, 2, lambda i, a: torch.pow(*i))
_reg(Op.MAXIMUM, 2, lambda i, a: torch.maximum(*i))
_reg(Op.MINIMUM, 2, lambda i, a: torch.minimum(*i))
_reg(Op.WHERE, 3, lambda i, a: torch.where(*i))
_reg(Op.MASKED_FILL, 3, lambda i, a: torch.masked_fill(i[0], i[1], i[2]))
for _op, _fn in [(Op.EQ, torch.eq), (Op.NE, torch.ne), (Op.LT, torch.lt), (Op.LE, torch.le),
                 (Op.GT, torch.gt), (Op.GE, torch.ge), (Op.LOGICAL_AND, torch.logical_and),
                 (Op.LOGICAL_OR, torch.logical_or)]:
    _reg(_op, 2, (lambda f: lambda i, a: f(*i))(_fn))

# elementwise unary
for _op, _fn in [(Op.NEG, torch.neg), (Op.ABS, torch.abs), (Op.SQRT, torch.sqrt), (Op.RSQRT, torch.rsqrt),
                 (Op.EXP, torch.exp), (Op.LOG, torch.log), (Op.ERF, torch.erf),
                 (Op.RECIPROCAL, torch.reciprocal), (Op.TANH, torch.tanh), (Op.SIGMOID, torch.sigmoid),
                 (Op.RELU, torch.relu), (Op.SILU, Fn.silu), (Op.LOGICAL_NOT, torch.logical_not)]:
    _reg(_op, 1, (lambda f: lambda i, a: f(i[0]))(_fn))
_reg(Op.GELU, 1, lambda i, a: Fn.gelu(i[0], approximate=a["approximate"]), approximate="none")
_reg(Op.CAST, 1, lambda i, a: i[0].to(torch_dtype(a["dtype"])), dtype=REQUIRED)

# normalisation, softmax
_reg(Op.SOFTMAX, 1, lambda i, a: torch.softmax(i[0], a["dim"]), dim=REQUIRED)
_reg(Op.LOG_SOFTMAX, 1, lambda i, a: torch.log_softmax(i[0], a["dim"]), dim=REQUIRED)
_reg(Op.LAYER_NORM, 3, lambda i, a: Fn.layer_norm(i[0], _t(a["normalized_shape"]), i[1], i[2], a["eps"]),
     normalized_shape=REQUIRED, eps=1e-5)
_reg(Op.BATCH_NORM, 5, lambda i, a: Fn.batch_norm(i[0], i[1], i[2], i[3], i[4], False, 0.0, a["eps"]),
     eps=1e-5)

# pooling
_reg(Op.MAX_POOL2D, 1, lambda i, a: Fn.max_pool2d(i[0], _t(a["kernel_size"]), _t(a["stride"]), _t(a["padding"]),
                                                  _t(a["dilation"]), a["ceil_mode"]),
     kernel_size=REQUIRED, stride=REQUIRED, padding=(0, 0), dilation=(1, 1), ceil_mode=False)
_reg(Op.AVG_POOL2D, 1, lambda i, a: Fn.avg_pool2d(i[0], _t(a["kernel_size"]), _t(a["stride"]), _t(a["padding"]),
                                                  a["ceil_mode"], a["count_include_pad"], a["divisor_override"]),
     kernel_size=REQUIRED, stride=REQUIRED, padding=(0, 0), ceil_mode=False, count_include_pad=True,
     divisor_override=None)
_reg(Op.ADAPTIVE_AVG_POOL2D, 1, lambda i, a: Fn.adaptive_avg_pool2d(i[0], _t(a["output_size"])),
     output_size=REQUIRED)

# reductions (dims None = all)
_reg(Op.MEAN, 1, lambda i, a: torch.mean(i[0], dim=_t(a["dims"]), keepdim=a["keepdim"]), dims=None, keepdim=False)
_reg(Op.SUM, 1, lambda i, a: torch.sum(i[0], dim=_t(a["dims"]), keepdim=a["keepdim"]), dims=None, keepdim=False)
_reg(Op.AMAX, 1, lambda i, a: torch.amax(i[0], dim=_t(a["dims"]) if a["dims"] is not None else (),
                                         keepdim=a["keepdim"]), dims=None, keepdim=False)

# layout
_reg(Op.RESHAPE, 1, lambda i, a: i[0].reshape(_t(a["shape"])), shape=REQUIRED)
_reg(Op.PERMUTE, 1, lambda i, a: i[0].permute(_t(a["dims"])), dims=REQUIRED)
_reg(Op.TRANSPOSE, 1, lambda i, a: i[0].transpose(a["dim0"], a["dim1"]), dim0=REQUIRED, dim1=REQUIRED)
_reg(Op.EXPAND, 1, lambda i, a: i[0].expand(_t(a["shape"])), shape=REQUIRED)
_reg(Op.FLATTEN, 1, lambda i, a: torch.flatten(i[0], a["start_dim"], a["end_dim"]), start_dim=0, end_dim=-1)
_reg(Op.UNSQUEEZE, 1, lambda i, a: i[0].unsqueeze(a["dim"]), dim=REQUIRED)
_reg(Op.SQUEEZE, 1, lambda i, a: i[0].squeeze(_t(a["dims"])) if a["dims"] is not None else i[0].squeeze(),
     dims=None)
_reg(Op.SLICE, 1, lambda i, a: i[0][(slice(None),) * (a["dim"] % max(i[0].dim(), 1))
                                    + (slice(a["start"], a["end"], a["step"]),)],
     dim=0, start=None, end=None, step=1)
_reg(Op.SELECT, 1, lambda i, a: i[0].select(a["dim"], a["index"]), dim=REQUIRED, index=REQUIRED)
_reg(Op.CAT, (1, -1), lambda i, a: torch.cat(list(i), a["dim"]), dim=0)

# lookup
_reg(Op.EMBEDDING, 2, lambda i, a: Fn.embedding(i[1], i[0]))


def full_attrs(op: Op, attrs: dict, where: str = "") -> dict:
    """Attributes with defaults filled in; unknown or missing ones raise ModelError."""
    d = OPS[op]
    unknown = set(attrs) - set(d.attrs)
    if unknown:
        raise ModelError(f"{where}{op.value}: unknown attribute(s) {sorted(unknown)}")
    out = {}
    for k, default in d.attrs.items():
        if k in attrs:
            out[k] = attrs[k]
        elif default is REQUIRED:
            raise ModelError(f"{where}{op.value}: missing required attribute {k!r}")
        else:
            out[k] = default
    return out


def evaluate(op: Op, inputs: list[torch.Tensor], attrs: dict) -> torch.Tensor:
    """Apply ``op``'s reference rule (attrs must already be complete)."""
    out = OPS[op].rule(list(inputs), attrs)
    # views of inputs must never alias: later in-place use would corrupt them
    return out.contiguous() if isinstance(out, torch.Tensor) else out


def infer_type(op: Op, input_types: list[TensorType], attrs: dict, where: str = "") -> TensorType:
    """Output type of ``op`` on inputs of these types, by running the rule on meta tensors."""
    d = OPS[op]
    lo, hi = d.arity
    if len(input_types) < lo or (hi >= 0 and len(input_types) > hi):
        want = f"{lo}" if lo == hi else f"{lo}..{'any' if hi < 0 else hi}"
        raise ModelError(f"{where}{op.value}: expected {want} inputs, got {len(input_types)}")
    metas = [torch.empty(t.shape, dtype=torch_dtype(t.dtype), device="meta") for t in input_types]
    try:
        out = d.rule(metas, full_attrs(op, attrs, where))
    except ModelError:
        raise
    except Exception as exc:  # torch's own shape/dtype error, re-raised with the node named
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shapes = ", ".join(str(t) for t in input_types)
        raise ModelError(f"{where}{op.value}({shapes}): {msg}") from None
    return TensorType(tuple(int(s) for s in out.shape), dtype_of_torch(out.dtype))
