"""fx (ATen-level) graph -> sparsec IR, through ONE lowering table.

``LOWERINGS`` maps an ATen op name (``"linear"``, ``"add"``, ...; overloads of one
op share an entry) to a function ``(ctx, args, kwargs) -> IR name | tuple``.
``sparsec compile`` (torch.export graphs) and the torch.compile backend
(dynamo / aot_autograd graphs) both lower through ``FxLowering``: the only
difference is where parameter values come from (``params``).

An op outside the table raises ``ModelError`` naming the op, the fx node and,
where torch recorded it, the user's source line.
"""
from __future__ import annotations

import math
import operator
import re
from typing import Any, Callable, Mapping

import torch
import torch.fx as fx

from sparsec.ir.errors import ModelError
from sparsec.ir.graph import Graph, GraphBuilder
from sparsec.ir.ops import Op
from sparsec.ir.types import TensorType, dtype_of_torch

Lowering = Callable[["FxLowering", tuple, dict], Any]
LOWERINGS: dict[str, Lowering] = {}

# ops that return their input unchanged at inference time (no copy semantics needed:
# IR values are never mutated)
ALIASES = {"clone", "contiguous", "alias", "detach", "lift_fresh_copy", "dropout", "feature_dropout",
           "alpha_dropout", "_assert_tensor_metadata"}
# ops with no value that matters for inference
IGNORED = {"_assert_scalar", "_assert_async", "sym_constrain_range_for_size", "_assert_tensor_metadata"}


# Nodes whose tensor inputs are all constants are evaluated at lowering time when
# their result has at most this many elements (any size for ops outside the table).
FOLD_LIMIT = 1 << 16


def _numel(n: fx.Node) -> int:
    val = n.meta.get("val")
    return val.numel() if isinstance(val, torch.Tensor) else FOLD_LIMIT + 1


def lowers(*names: str):
    def deco(fn: Lowering) -> Lowering:
        for n in names:
            LOWERINGS[n] = fn
        return fn
    return deco


def op_name(target) -> str | None:
    """The ATen op name of an fx call_function target ("add" for aten.add.Tensor)."""
    if target is operator.getitem:
        return "getitem"
    schema = getattr(target, "_schema", None)
    if schema is not None:
        ns, _, name = schema.name.partition("::")
        return name if ns == "aten" else f"{ns}::{name}"
    return getattr(target, "__name__", None)


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def user_source(node: fx.Node, prefer_file: str | None = None) -> str:
    """'file.py:LINE: code' of the user frame that produced ``node`` (last frame, or one in prefer_file)."""
    trace = node.meta.get("stack_trace") or ""
    frames = _FRAME.findall(trace)
    if not frames:
        return ""
    pick = frames[-1]
    if prefer_file:
        mine = [f for f in frames if f[0].endswith(prefer_file.split("/")[-1])]
        if mine:
            pick = mine[-1]
    return f"{pick[0].split('/')[-1]}:{pick[1]}: {pick[3].strip()}"


class FxLowering:
    """Lowers one fx graph. ``params`` maps placeholder names to constant tensors."""

    def __init__(self, gm: fx.GraphModule, params: Mapping[str, torch.Tensor] | None = None,
                 user_inputs: list[str] | None = None, name: str = "main", source_file: str | None = None,
                 param_names: Mapping[str, str] | None = None):
        self.gm = gm
        self.params = dict(params or {})
        self.param_names = dict(param_names or {})
        self.user_inputs = user_inputs
        self.b = GraphBuilder(name)
        self.env: dict[fx.Node, Any] = {}
        self.source_file = source_file
        self.node: fx.Node | None = None
        self._scalars: dict[tuple, str] = {}

    # -- helpers used by the lowering rules -----------------------------------------
    def where(self) -> str:
        n = self.node
        src = user_source(n, self.source_file) if n is not None else ""
        return f"fx node {n.name!r}" + (f" at {src}" if src else "") if n is not None else "graph"

    def error(self, msg: str) -> ModelError:
        return ModelError(f"{msg} ({self.where()})")

    def value(self, a) -> str:
        """IR name for an fx argument: a lowered node, or a Python scalar as a 0-d constant."""
        if isinstance(a, fx.Node):
            v = self.env[a]
            if isinstance(v, tuple):
                raise self.error(f"a tuple-valued node ({a.name}) is used as a tensor")
            return v
        if isinstance(a, (bool, int, float)):
            dtype = torch.bool if isinstance(a, bool) else (torch.int64 if isinstance(a, int) else torch.float32)
            key = (type(a).__name__, repr(a))
            if key not in self._scalars:
                self._scalars[key] = self.b.constant("c", torch.tensor(a, dtype=dtype))
            return self._scalars[key]
        if isinstance(a, torch.Tensor):
            return self.b.constant("const", a.detach().clone())
        raise self.error(f"unsupported argument {a!r} of type {type(a).__name__}")

    def type(self, name: str) -> TensorType:
        return self.b.types[name]

    def emit(self, op: Op | str, inputs, attrs: dict | None = None) -> str:
        hint = self.node.name if self.node is not None else None
        return self.b.node(op, [self.value(i) if not isinstance(i, str) else i for i in inputs], attrs or {},
                           hint=hint, source=self.where())

    def const(self, hint: str, t: torch.Tensor) -> str:
        return self.b.constant(hint, t)

    # -- driver ----------------------------------------------------------------------
    def run(self) -> Graph:
        outputs: list[str] = []
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for n in placeholders:
            self.node = n
            if n.name in self.params:
                self.env[n] = self.b.constant(self.param_names.get(n.name, n.name), self.params[n.name])
            else:
                if self.user_inputs is not None and n.name not in self.user_inputs:
                    raise self.error(f"placeholder {n.name} is neither a parameter nor a user input")
                val = n.meta.get("val", n.meta.get("example_value"))
                if not isinstance(val, torch.Tensor):
                    raise self.error(f"input {n.name} is not a tensor (got {type(val).__name__}); "
                                     f"sparsec needs static tensor inputs")
                self.env[n] = self.b.input(n.name, TensorType.of(val))
        for n in self.gm.graph.nodes:
            self.node = n
            if n.op == "placeholder":
                continue
            if n.op == "output":
                leaves = torch.utils._pytree.tree_leaves(n.args[0])
                if any(leaf is None for leaf in leaves):
                    raise self.error("a model output is None; sparsec needs tensor outputs")
                outputs = [self.value(leaf) for leaf in leaves]
                continue
            if n.op == "get_attr":
                self.env[n] = self.b.constant(n.target, getattr_path(self.gm, n.target))
                continue
            if n.op != "call_function":
                raise self.error(f"unsupported fx node kind {n.op!r} (target {n.target})")
            name = op_name(n.target)
            if name in IGNORED and not n.users:
                continue
            if name in ALIASES:
                self.env[n] = self.env[n.args[0]] if isinstance(n.args[0], fx.Node) else self.value(n.args[0])
                continue
            rule = LOWERINGS.get(name)
            if self._all_constant(n) and (rule is None or _numel(n) <= FOLD_LIMIT):
                self.env[n] = self._fold_constant(n)
                continue
            if rule is None:
                raise self.error(f"unsupported op aten.{name} (target {n.target}): it is outside sparsec's IR op "
                                 f"set")
            self.env[n] = rule(self, n.args, dict(n.kwargs))
        self.node = None
        return self.b.build(outputs)


    # -- constant folding of ops outside the table whose tensor inputs are all constants
    # (e.g. BERT gathers its token-type buffer by constant position ids) --
    def _all_constant(self, n: fx.Node) -> bool:
        consts = {c.name for c in self.b.constants}
        deps = [a for a in n.all_input_nodes]
        return bool(deps) and all(isinstance(self.env.get(d), str) and self.env[d] in consts for d in deps)

    def _fold_constant(self, n: fx.Node) -> str:
        consts = {c.name: c for c in self.b.constants}
        args, kwargs = fx.node.map_arg((n.args, n.kwargs), lambda d: consts[self.env[d]].dense())
        with torch.no_grad():
            out = n.target(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise self.error(f"cannot fold aten.{op_name(n.target)}: it does not return one tensor")
        return self.b.constant(n.name, out.detach().contiguous())


def getattr_path(obj, path: str):
    for p in path.split("."):
        obj = getattr(obj, p)
    return obj.detach() if isinstance(obj, torch.Tensor) else obj


def _arg(args, kwargs, i, name, default=None):
    if i < len(args):
        return args[i]
    return kwargs.get(name, default)


def _ints(v, n: int = 2) -> tuple:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


# ---------------------------------------------------------------------------------------
# The table. Each rule reads ATen's own argument order (see native_functions.yaml).

@lowers("linear")
def _linear(c, a, k):
    b = _arg(a, k, 2, "bias")
    return c.emit(Op.LINEAR, [a[0], a[1]] + ([b] if b is not None else []))


@lowers("conv2d", "convolution")
def _conv(c, a, k):
    name = op_name(c.node.target)
    x, w, b = a[0], a[1], _arg(a, k, 2, "bias")
    if name == "convolution":
        stride, padding, dilation = a[3], a[4], a[5]
        transposed, groups = a[6], a[8]
        if transposed:
            raise c.error("transposed convolution is outside sparsec's IR op set")
    else:
        stride = _arg(a, k, 3, "stride", 1)
        padding = _arg(a, k, 4, "padding", 0)
        dilation = _arg(a, k, 5, "dilation", 1)
        groups = _arg(a, k, 6, "groups", 1)
    wt = c.type(c.value(w))
    if len(wt.shape) != 4:
        raise c.error(f"only 2-D convolution is supported (weight {wt})")
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        else:  # "same", stride 1: pad (d*(k-1))//2 each side when the total is even
            kh, kw = wt.shape[2:]
            d = _ints(dilation)
            tot = (d[0] * (kh - 1), d[1] * (kw - 1))
            if any(t % 2 for t in tot):
                raise c.error("padding='same' with an even kernel is not supported")
            padding = (tot[0] // 2, tot[1] // 2)
    return c.emit(Op.CONV2D, [x, w] + ([b] if b is not None else []),
                  {"stride": _ints(stride), "padding": _ints(padding), "dilation": _ints(dilation),
                   "groups": int(groups)})


@lowers("addmm", "baddbmm")
def _addmm(c, a, k):
    op = Op.ADDMM if op_name(c.node.target) == "addmm" else Op.BADDBMM
    return c.emit(op, a[:3], {"beta": k.get("beta", 1), "alpha": k.get("alpha", 1)})


for _n, _op in [("mm", Op.MM), ("bmm", Op.BMM), ("matmul", Op.MATMUL), ("maximum", Op.MAXIMUM),
                ("minimum", Op.MINIMUM), ("mul", Op.MUL), ("pow", Op.POW), ("eq", Op.EQ), ("ne", Op.NE),
                ("lt", Op.LT), ("le", Op.LE), ("gt", Op.GT), ("ge", Op.GE), ("logical_and", Op.LOGICAL_AND),
                ("logical_or", Op.LOGICAL_OR), ("where", Op.WHERE)]:
    lowers(_n)((lambda op: lambda c, a, k: c.emit(op, list(a)))(_op))

for _n, _op in [("neg", Op.NEG), ("abs", Op.ABS), ("sqrt", Op.SQRT), ("rsqrt", Op.RSQRT), ("exp", Op.EXP),
                ("log", Op.LOG), ("erf", Op.ERF), ("reciprocal", Op.RECIPROCAL), ("tanh", Op.TANH),
                ("sigmoid", Op.SIGMOID), ("relu", Op.RELU), ("silu", Op.SILU), ("logical_not", Op.LOGICAL_NOT),
                ("bitwise_not", Op.LOGICAL_NOT)]:
    lowers(_n)((lambda op: lambda c, a, k: c.emit(op, [a[0]]))(_op))


@lowers("add", "sub")
def _add(c, a, k):
    op = Op.ADD if op_name(c.node.target) == "add" else Op.SUB
    return c.emit(op, a[:2], {"alpha": _arg(a, k, 2, "alpha", 1)})


@lowers("rsub")
def _rsub(c, a, k):
    return c.emit(Op.SUB, [a[1], a[0]], {"alpha": _arg(a, k, 2, "alpha", 1)})


@lowers("div")
def _div(c, a, k):
    return c.emit(Op.DIV, a[:2], {"rounding_mode": k.get("rounding_mode")})


@lowers("masked_fill")
def _masked_fill(c, a, k):
    return c.emit(Op.MASKED_FILL, a[:3])


@lowers("gelu")
def _gelu(c, a, k):
    return c.emit(Op.GELU, [a[0]], {"approximate": k.get("approximate", _arg(a, {}, 1, "", "none"))})


@lowers("hardtanh", "clamp")
def _clamp(c, a, k):
    # clamp(x, lo, hi) = minimum(maximum(x, lo), hi), both bounds optional
    x = c.value(a[0])
    lo = _arg(a, k, 1, "min")
    hi = _arg(a, k, 2, "max")
    if op_name(c.node.target) == "hardtanh":
        lo, hi = _arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0)
    if lo is not None:
        x = c.emit(Op.MAXIMUM, [x, c.value(torch.tensor(lo, dtype=torch.float32)) if isinstance(lo, float)
                                else lo])
    if hi is not None:
        x = c.emit(Op.MINIMUM, [x, c.value(torch.tensor(hi, dtype=torch.float32)) if isinstance(hi, float)
                                else hi])
    return x


@lowers("_to_copy", "to", "type_as", "_autocast_to_reduced_precision")
def _cast(c, a, k):
    x = c.value(a[0])
    name = op_name(c.node.target)
    if name == "type_as":
        dt = c.type(c.value(a[1])).dtype
    else:
        dt = k.get("dtype")
        if dt is None:
            dt = next((v for v in a[1:] if isinstance(v, torch.dtype)), None)
        if dt is None:
            return x  # a device/layout-only copy
        dt = dtype_of_torch(dt)
    return x if c.type(x).dtype == dt else c.emit(Op.CAST, [x], {"dtype": dt})


@lowers("_softmax", "softmax", "_log_softmax", "log_softmax")
def _softmax(c, a, k):
    name = op_name(c.node.target)
    op = Op.LOG_SOFTMAX if "log" in name else Op.SOFTMAX
    x = c.value(a[0])
    dt = k.get("dtype", a[2] if name in ("softmax", "log_softmax") and len(a) > 2 else None)
    if isinstance(dt, torch.dtype):
        x = c.emit(Op.CAST, [x], {"dtype": dtype_of_torch(dt)})
    out = c.emit(op, [x], {"dim": int(a[1])})
    if name.startswith("_") and len(a) > 2 and a[2] is True:   # half_to_float
        out = c.emit(Op.CAST, [out], {"dtype": "float32"})
    return out


def _norm_param(c, v, shape, fill: float, dtype: str, hint: str):
    if v is not None:
        return c.value(v)
    return c.const(hint, torch.full(shape, fill, dtype=getattr(torch, dtype)))


@lowers("layer_norm", "native_layer_norm")
def _layer_norm(c, a, k):
    x = c.value(a[0])
    shape = tuple(int(s) for s in a[1])
    w, b = _arg(a, k, 2, "weight"), _arg(a, k, 3, "bias")
    eps = float(_arg(a, k, 4, "eps", 1e-5))
    t = c.type(x)
    out = c.emit(Op.LAYER_NORM, [x, _norm_param(c, w, shape, 1.0, t.dtype, "ln_weight"),
                                 _norm_param(c, b, shape, 0.0, t.dtype, "ln_bias")],
                 {"normalized_shape": shape, "eps": eps})
    return (out, None, None) if op_name(c.node.target) == "native_layer_norm" else out


@lowers("_native_batch_norm_legit_no_training", "batch_norm", "_native_batch_norm_legit",
        "native_batch_norm")
def _batch_norm(c, a, k):
    name = op_name(c.node.target)
    x = c.value(a[0])
    ch = (c.type(x).shape[1],)
    dt = c.type(x).dtype
    if name == "_native_batch_norm_legit_no_training":
        w, b, mean, var, eps = a[1], a[2], a[3], a[4], a[6]
    else:  # (x, w, b, mean, var, training, momentum, eps)
        w, b, mean, var, training, eps = a[1], a[2], a[3], a[4], a[5], a[7]
        if training:
            raise c.error("batch_norm in training mode; call model.eval() before compiling")
    out = c.emit(Op.BATCH_NORM, [x, c.value(mean), c.value(var), _norm_param(c, w, ch, 1.0, dt, "bn_weight"),
                                 _norm_param(c, b, ch, 0.0, dt, "bn_bias")], {"eps": float(eps)})
    return out if name == "batch_norm" else (out, None, None)


@lowers("max_pool2d_with_indices", "max_pool2d")
def _max_pool(c, a, k):
    ks = _ints(a[1])
    stride = _arg(a, k, 2, "stride", None) or ks
    attrs = {"kernel_size": ks, "stride": _ints(stride), "padding": _ints(_arg(a, k, 3, "padding", 0)),
             "dilation": _ints(_arg(a, k, 4, "dilation", 1)), "ceil_mode": bool(_arg(a, k, 5, "ceil_mode", False))}
    out = c.emit(Op.MAX_POOL2D, [a[0]], attrs)
    return (out, None) if op_name(c.node.target) == "max_pool2d_with_indices" else out


@lowers("avg_pool2d")
def _avg_pool(c, a, k):
    ks = _ints(a[1])
    stride = _arg(a, k, 2, "stride", None) or ks
    return c.emit(Op.AVG_POOL2D, [a[0]], {
        "kernel_size": ks, "stride": _ints(stride), "padding": _ints(_arg(a, k, 3, "padding", 0)),
        "ceil_mode": bool(_arg(a, k, 4, "ceil_mode", False)),
        "count_include_pad": bool(_arg(a, k, 5, "count_include_pad", True)),
        "divisor_override": _arg(a, k, 6, "divisor_override", None)})


@lowers("adaptive_avg_pool2d", "_adaptive_avg_pool2d")
def _adaptive(c, a, k):
    return c.emit(Op.ADAPTIVE_AVG_POOL2D, [a[0]], {"output_size": _ints(a[1])})


def _dims(v):
    if v is None:
        return None
    if isinstance(v, int):
        return (v,)
    v = tuple(int(d) for d in v)
    return v if v else None


@lowers("mean", "sum", "amax")
def _reduce(c, a, k):
    name = op_name(c.node.target)
    op = {"mean": Op.MEAN, "sum": Op.SUM, "amax": Op.AMAX}[name]
    x = c.value(a[0])
    dt = k.get("dtype")
    if dt is None and len(a) > 1 and isinstance(a[1], torch.dtype):   # sum.default(x, dtype)
        dt = a[1]
    if isinstance(dt, torch.dtype):
        x = c.emit(Op.CAST, [x], {"dtype": dtype_of_torch(dt)})
    dims = _dims(_arg(a, k, 1, "dim")) if not (len(a) > 1 and isinstance(a[1], torch.dtype)) else None
    keepdim = bool(_arg(a, k, 2, "keepdim", False))
    if name == "sum" and c.type(x).dtype in ("bool", "uint8", "int8", "int16", "int32"):
        x = c.emit(Op.CAST, [x], {"dtype": "int64"})        # torch sums small ints into int64
    return c.emit(op, [x], {"dims": dims, "keepdim": keepdim})


@lowers("view", "reshape", "_unsafe_view", "view_copy", "_reshape_alias")
def _reshape(c, a, k):
    x = c.value(a[0])
    shape = tuple(int(s) for s in a[1])
    if -1 in shape:  # resolve so the IR text shows the real shape
        known = math.prod(s for s in shape if s != -1)
        shape = tuple(c.type(x).numel // max(known, 1) if s == -1 else s for s in shape)
    return c.emit(Op.RESHAPE, [x], {"shape": shape})


@lowers("permute")
def _permute(c, a, k):
    return c.emit(Op.PERMUTE, [a[0]], {"dims": tuple(int(d) for d in a[1])})


@lowers("t", "numpy_T")
def _t(c, a, k):
    x = c.value(a[0])
    return x if len(c.type(x).shape) < 2 else c.emit(Op.TRANSPOSE, [x], {"dim0": 0, "dim1": 1})


@lowers("transpose")
def _transpose(c, a, k):
    return c.emit(Op.TRANSPOSE, [a[0]], {"dim0": int(a[1]), "dim1": int(a[2])})


@lowers("expand", "expand_as")
def _expand(c, a, k):
    if op_name(c.node.target) == "expand_as":
        return c.emit(Op.EXPAND, [a[0]], {"shape": c.type(c.value(a[1])).shape})
    return c.emit(Op.EXPAND, [a[0]], {"shape": tuple(int(s) for s in a[1])})


@lowers("flatten")
def _flatten(c, a, k):
    return c.emit(Op.FLATTEN, [a[0]], {"start_dim": int(_arg(a, k, 1, "start_dim", 0)),
                                       "end_dim": int(_arg(a, k, 2, "end_dim", -1))})


@lowers("unsqueeze")
def _unsqueeze(c, a, k):
    return c.emit(Op.UNSQUEEZE, [a[0]], {"dim": int(a[1])})


@lowers("squeeze")
def _squeeze(c, a, k):
    return c.emit(Op.SQUEEZE, [a[0]], {"dims": _dims(a[1]) if len(a) > 1 else None})


@lowers("slice")
def _slice(c, a, k):
    x = c.value(a[0])
    shape = c.type(x).shape
    dim = int(_arg(a, k, 1, "dim", 0)) % max(len(shape), 1)
    start, end, step = _arg(a, k, 2, "start"), _arg(a, k, 3, "end"), int(_arg(a, k, 4, "step", 1))
    # normalise to concrete bounds so the IR text is stable
    start, end, _ = slice(start, end, step).indices(shape[dim])
    if start == 0 and end >= shape[dim] and step == 1:
        return x
    return c.emit(Op.SLICE, [x], {"dim": dim, "start": start, "end": end, "step": step})


@lowers("select")
def _select(c, a, k):
    return c.emit(Op.SELECT, [a[0]], {"dim": int(a[1]), "index": int(a[2])})


@lowers("cat", "concat")
def _cat(c, a, k):
    return c.emit(Op.CAT, list(a[0]), {"dim": int(_arg(a, k, 1, "dim", 0))})


@lowers("split", "split_with_sizes", "unsafe_split", "chunk")
def _split(c, a, k):
    # split lowers to one slice per piece (the IR is single-output)
    x = c.value(a[0])
    dim = int(_arg(a, k, 2, "dim", 0)) % len(c.type(x).shape)
    n = c.type(x).shape[dim]
    size = a[1]
    if op_name(c.node.target) == "chunk":
        size = -(-n // int(size))
    sizes = list(size) if isinstance(size, (list, tuple)) else [int(size)] * (-(-n // int(size)))
    if isinstance(size, int) and n % size:
        sizes[-1] = n - size * (len(sizes) - 1)
    outs, start = [], 0
    for s in sizes:
        outs.append(c.emit(Op.SLICE, [x], {"dim": dim, "start": start, "end": start + s, "step": 1}))
        start += s
    return tuple(outs)


@lowers("unbind")
def _unbind(c, a, k):
    x = c.value(a[0])
    dim = int(_arg(a, k, 1, "dim", 0))
    return tuple(c.emit(Op.SELECT, [x], {"dim": dim, "index": i}) for i in range(c.type(x).shape[dim]))


@lowers("embedding")
def _embedding(c, a, k):
    return c.emit(Op.EMBEDDING, [a[0], a[1]])


@lowers("getitem")
def _getitem(c, a, k):
    tup = c.env[a[0]]
    if not isinstance(tup, tuple):
        raise c.error("getitem on a non-tuple value")
    v = tup[a[1]]
    if v is None:
        raise c.error(f"output {a[1]} of {a[0].name} (e.g. batch-norm statistics or pool indices) is not "
                      f"supported")
    return v


# -- creation ops: their value depends only on static shapes, so they fold to constants --
def _fold(c, a, k):
    val = c.node.meta.get("val")
    fn = c.node.target
    args = [_example(c, x) if isinstance(x, fx.Node) else x for x in a]
    out = fn(*args, **{kk: vv for kk, vv in k.items() if kk not in ("device", "pin_memory")})
    if isinstance(val, torch.Tensor) and tuple(out.shape) != tuple(val.shape):
        raise c.error("constant folding produced the wrong shape")
    return c.const(c.node.name, out.detach().to("cpu"))


def _example(c, n: fx.Node):
    name = c.env[n]
    t = c.type(name)
    return torch.zeros(t.shape, dtype=getattr(torch, t.dtype))


for _n in ("scalar_tensor", "full", "zeros", "ones", "arange", "zeros_like", "ones_like", "full_like",
           "empty_like", "new_zeros", "new_ones", "new_full", "lift_fresh", "fill"):
    lowers(_n)(_fold)
