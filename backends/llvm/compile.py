"""Whole-graph compile for CPU (LLVM): IR graph -> one TVM library + an executor plan.

Each node becomes one compiled function (identical functions are built once):

- reshape-like nodes (reshape, flatten, squeeze, unsqueeze) are free views;
- ``linear`` with a constant weight (any format, Dense included) runs the
  weight format's kernel family (``sparsec.backends.kernels``), which works in
  the feature-major layout: the activation is transposed in (``XT[K, T]``) and
  out (``YT[O, T]``) around it, except at one token where both are views;
- ``conv2d`` with a sparse constant weight runs im2col + the matmul family;
- every other node runs its TE lowering (``sparsec.backends.te_ops``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from sparsec.backends.runtime import Executor, plan_storages
from sparsec.ir.errors import ModelError
from sparsec.ir.formats import Dense, SparseFormat
from sparsec.ir.graph import Graph, Node, make_node
from sparsec.ir.ops import Op
from sparsec.ir.types import TensorType

VIEW_OPS = {Op.RESHAPE, Op.FLATTEN, Op.SQUEEZE, Op.UNSQUEEZE}
# Injective ops computed inside their single user's function (elementwise chains, broadcasts).
FUSABLE = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAXIMUM, Op.MINIMUM, Op.WHERE, Op.MASKED_FILL, Op.EQ,
           Op.NE, Op.LT, Op.LE, Op.GT, Op.GE, Op.LOGICAL_AND, Op.LOGICAL_OR, Op.NEG, Op.ABS, Op.SQRT,
           Op.RSQRT, Op.EXP, Op.LOG, Op.ERF, Op.RECIPROCAL, Op.TANH, Op.SIGMOID, Op.RELU, Op.GELU, Op.SILU,
           Op.LOGICAL_NOT, Op.CAST, Op.EXPAND}


def transpose_func(rows: int, cols: int, dtype: str, knobs: dict | None = None):
    """``Y[cols, rows] = X[rows, cols]ᵀ`` in b x b tiles (both sides stay in L1; the write is a
    contiguous vector). 3-6x faster than the generic injective schedule, on par with torch.
    ``knobs``: ``TRANSPOSE_KNOBS`` (``parallel`` False: serial tiles)."""
    from tvm import s_tir, te

    from sparsec.backends.te.schedule import TRANSPOSE_KNOBS, check_te_knobs

    par = check_te_knobs(knobs, TRANSPOSE_KNOBS)["parallel"]

    x = te.placeholder((rows, cols), dtype, name="X")
    y = te.compute((cols, rows), lambda i, j: x[j, i], name="Y")
    sch = s_tir.Schedule(te.create_prim_func([x, y]))
    blk = sch.get_sblock("Y")
    i, j = sch.get_loops(blk)
    bi = next(b for b in (16, 8, 4, 2, 1) if cols % b == 0)
    bj = next(b for b in (16, 8, 4, 2, 1) if rows % b == 0)
    io, ii = sch.split(i, [None, bi])
    jo, ji = sch.split(j, [None, bj])
    sch.reorder(io, jo, ii, ji)
    outer = sch.fuse(io, jo)
    if par is not False:
        sch.parallel(outer)
    if bj > 1:
        sch.vectorize(ji)
    return sch.mod["main"]


@dataclass
class CompiledGraph:
    graph: Graph
    target: object
    module: object                       # the built tvm runtime module
    plan: dict
    consts: dict[str, torch.Tensor]      # "<weight>/<buffer>" or "<const>" -> tensor
    functions: dict[str, str] = field(default_factory=dict)   # symbol -> what it computes
    timings: dict[str, float] = field(default_factory=dict)
    sites: list = field(default_factory=list)     # tunable TE functions / transposes (lower_only)

    def executor(self) -> Executor:
        return Executor(self.module, self.plan, self.consts)


class _Planner:
    def __init__(self, g: Graph, target, knobs_for: Callable | None = None, te_knobs_for: Callable | None = None):
        self.g = g
        self.target = target
        # (format object, tokens) -> kernel knobs dict or None (the tuning database's answer)
        self.knobs_for = knobs_for or (lambda fmt, tokens: None)
        # TeSite -> schedule knobs of a TE function / transpose, or None (the rules)
        self.te_knobs_for = te_knobs_for or (lambda site: None)
        self.sites: dict[str, object] = {}
        self.types: dict[str, TensorType] = g.types()
        self.consts = g.constant_map()
        self.funcs: dict[str, object] = {}
        self.func_doc: dict[str, str] = {}
        self._by_hash: dict[int, list[str]] = {}
        self._plain: dict[str, object] = {}
        self._by_key: dict[tuple, str] = {}
        # value (storage root) -> a value holding its 2-D transpose, for layout reuse
        self.transposed: dict[str, str] = {}
        self.steps: list[dict] = []
        self.values: dict[str, dict] = {}
        self.alias_of: dict[str, str] = {}
        self.order: list[str] = []
        self.defs: dict[str, int] = {}
        self.uses: dict[str, list[int]] = {}
        self.const_tensors: dict[str, torch.Tensor] = {}
        self._n = 0

    # -- values ------------------------------------------------------------------------
    def define(self, name: str, t: TensorType, alias: str | None = None) -> str:
        self.types[name] = t
        self.values[name] = {"kind": "storage", "shape": list(t.shape), "dtype": t.dtype}
        self.order.append(name)
        self.defs[name] = len(self.steps)
        if alias is not None:
            self.alias_of[name] = alias
        return name

    def temp(self, hint: str, t: TensorType, alias: str | None = None) -> str:
        self._n += 1
        return self.define(f"{hint}#{self._n}", t, alias)

    def const_value(self, key: str, t: torch.Tensor) -> str:
        name = "const:" + key
        if name not in self.values:
            self.values[name] = {"kind": "const", "const": key, "shape": list(t.shape),
                                 "dtype": str(t.dtype).replace("torch.", "")}
            self.const_tensors[key] = t.contiguous()
        return name

    def arg(self, name: str) -> str:
        """The value name to pass for IR value ``name`` (constants become const values)."""
        if name in self.consts:
            return self.const_value(name, self.consts[name].dense())
        return name

    def drop_dead_steps(self, outputs: set[str]) -> None:
        """Remove steps whose result (last argument) nothing reads, e.g. a matmul's token-major
        copy when only the next matmul, which reads the feature-major one, consumes it."""
        while True:
            roots_used = {self.root(o) for o in outputs}
            for st in self.steps:
                roots_used.update(self.root(a) for a in st["args"][:-1])
            keep = [st for st in self.steps if self.root(st["args"][-1]) in roots_used]
            if len(keep) == len(self.steps):
                break
            self.steps = keep
        # recompute definition points and uses for the liveness planner
        self.uses = {}
        for i, st in enumerate(self.steps):
            for a in st["args"]:
                self.uses.setdefault(a, []).append(i)
            self.defs[st["args"][-1]] = i
        for v in self.order:
            if v in self.alias_of:
                self.defs[v] = self.defs.get(self.root(v), 0)
        live = {self.root(a) for st in self.steps for a in st["args"]} | {self.root(o) for o in outputs} | \
               {v for v in self.order if self.values[v]["kind"] == "input" or v in self.input_names}
        self.order = [v for v in self.order if self.root(v) in live]

    def step(self, func: str, args: list[str], node: str) -> None:
        i = len(self.steps)
        for a in args:
            self.uses.setdefault(a, []).append(i)
        self.steps.append({"func": func, "args": args, "node": node})

    def add_func(self, func, doc: str, hint: str) -> str:
        import tvm_ffi

        key = tvm_ffi.structural_hash(func)
        for sym in self._by_hash.get(key, []):
            if tvm_ffi.structural_equal(self._plain[sym], func):
                return sym
        sym = f"sc_{len(self.funcs)}_{hint}"
        self._plain[sym] = func
        self.funcs[sym] = func.with_attr("global_symbol", sym)
        self.func_doc[sym] = doc
        self._by_hash.setdefault(key, []).append(sym)
        return sym

    # -- lowering -------------------------------------------------------------------------
    def te_node(self, node: Node, out: str) -> None:
        """One TE function for ``node`` and the injective producers fused into it."""
        from tvm import te

        from sparsec.backends.te.rules import ScalarConst, lower_node

        externals: list[str] = []

        def desc(name: str):
            """A structural description of the fused expression: the cache key."""
            p = self.producers.get(name)
            if p is not None and self.fused_into.get(name):
                return (p.op.value, p.attrs, tuple(desc(i) for i in p.inputs), (p.type.shape, p.type.dtype))
            c = self.consts.get(name)
            if c is not None and len(c.value.shape) == 0:
                v = c.dense().item()
                return ("scalar", c.type.dtype, type(v).__name__, repr(v))
            if name not in externals:
                externals.append(name)
            t = self.types[name] if c is None else c.type
            return ("ext", externals.index(name), t.shape, t.dtype)

        key = ("group", node.op.value, node.attrs, tuple(desc(i) for i in node.inputs),
               (node.type.shape, node.type.dtype))
        sym = self._by_key.get(key)
        if sym is None:
            memo: dict[str, object] = {}
            holders: dict[str, object] = {}

            def tensor(name: str):
                if name in memo:
                    return memo[name]
                p = self.producers.get(name)
                c = self.consts.get(name)
                if p is not None and self.fused_into.get(name):
                    t = lower_node(p, [tensor(i) for i in p.inputs], p.type)
                elif c is not None and len(c.value.shape) == 0:
                    t = ScalarConst(c.dense().item(), c.type.dtype)
                else:
                    typ = self.types[name] if c is None else c.type
                    t = holders[name] = te.placeholder(tuple(typ.shape), typ.dtype, name=f"in{len(holders)}")
                memo[name] = t
                return t

            result = self.lower_root(node, tensor)
            func = te.create_prim_func([*(holders[e] for e in externals), result])
            fused = sorted({self.producers[n].op.value for n, c in self.fused_into.items() if c and
                            self._fused_root(n) == node.name})
            doc = f"{node.op.value} {node.type}" + (f" (fused: {', '.join(fused)})" if fused else "")
            func, doc = self.schedule_te(func, node, key, externals, doc)
            sym = self._by_key[key] = self.add_func(func, doc, node.op.value)
        if key in self.sites:
            self.sites[key].count += 1
        self.step(sym, [self.arg(e) for e in externals] + [out], node.name)

    def lower_root(self, node: Node, tensor):
        """The TE expression of ``node`` itself, its inputs given by ``tensor(name)`` (target hook)."""
        from sparsec.backends.te.rules import lower_node

        return lower_node(node, [tensor(i) for i in node.inputs], node.type)

    def schedule_te(self, func, node: Node, key, externals: list[str], doc: str):
        """Schedule a TE function for this target; returns (func, doc) (target hook: CPU schedules are
        tunable sites)."""
        from sparsec.backends import te_ops

        site = self._te_site(node, key, externals, func, doc)
        return te_ops.schedule_cpu(func, self.target, knobs=self.te_knobs_for(site)), doc

    def _te_site(self, node: Node, key, externals: list[str], func, doc: str):
        """The tunable description of a TE function (see backends/te/sites.py)."""
        import tvm

        from sparsec.backends.te.sites import TeSite, site_key

        def expr(name: str):
            p = self.producers.get(name)
            if p is not None and self.fused_into.get(name):
                return ("node", p.op.value, dict(p.attr), tuple(expr(i) for i in p.inputs))
            c = self.consts.get(name)
            if c is not None and len(c.value.shape) == 0:
                return ("scalar", c.dense().item(), c.type.dtype)
            return ("in", externals.index(name))

        def typ(name: str):
            c = self.consts.get(name)
            return self.types[name] if c is None else c.type

        site = TeSite("te", site_key(key), node.op.value,
                      [(tuple(typ(e).shape), typ(e).dtype) for e in externals],
                      (tuple(node.type.shape), node.type.dtype),
                      ("node", node.op.value, dict(node.attr), tuple(expr(i) for i in node.inputs)), doc,
                      tvm.ir.save_json(func), count=0)
        self.sites[key] = site
        return site

    def _fused_root(self, name: str) -> str:
        while self.fused_into.get(name):
            name = self.fused_into[name]
        return name

    def plan_fusion(self) -> None:
        """Injective nodes with one user that is itself a TE node are computed inside that user."""
        users = self.g.users()
        outputs = set(self.g.outputs)
        self.producers = {n.name: n for n in self.g.nodes}
        self.fused_into = {}
        for n in self.g.nodes:
            us = users.get(n.name, [])
            if (n.op in FUSABLE and self.kind(n) == "te" and n.name not in outputs and len(us) == 1
                    and self.kind(us[0]) == "te" and us[0].inputs.count(n.name) == 1):
                self.fused_into[n.name] = us[0].name

    def kind(self, node: Node) -> str:
        x0 = node.inputs[0] if node.inputs else None
        w = node.inputs[1] if len(node.inputs) > 1 else None
        if node.op in VIEW_OPS and x0 not in self.consts:
            return "view"
        if node.op == Op.LINEAR and w in self.consts and x0 not in self.consts:
            return "linear"
        if (node.op == Op.CONV2D and w in self.consts and not isinstance(self.consts[w].value, Dense)
                and node.attr["groups"] == 1):
            return "sparse_conv"
        return "te"

    def root(self, v: str) -> str:
        while v in self.alias_of:
            v = self.alias_of[v]
        return v

    def transpose2d(self, src: str, rows: int, cols: int, dtype: str, hint: str) -> str:
        """A value holding src[rows, cols]ᵀ [cols, rows]: reused if that transpose exists already
        (Q, K and V share their input's; a matmul's YT is the next matmul's XT), else a new step."""
        known = self.transposed.get(self.root(src))
        if known is not None and self.types[known].shape == (cols, rows):
            return known
        dst = self.temp(hint, TensorType((cols, rows), dtype))
        key = ("transpose2d", rows, cols, dtype)
        sym = self._by_key.get(key)
        if sym is None:
            from sparsec.backends.te.sites import TeSite, site_key

            site = self.sites[key] = TeSite("transpose", site_key(key), "transpose", [((rows, cols), dtype)],
                                            ((cols, rows), dtype), ("transpose",), f"transpose {rows}x{cols}",
                                            (rows, cols, dtype), count=0)
            sym = self._by_key[key] = self.add_func(transpose_func(rows, cols, dtype, self.te_knobs_for(site)),
                                                    f"transpose {rows}x{cols}", "transpose")
        self.sites[key].count += 1
        self.step(sym, [src, dst], hint)
        self.transposed[self.root(src)] = dst
        self.transposed[dst] = src
        return dst

    def linear(self, node: Node) -> None:
        from sparsec.backends.kernels import matmul_primfunc

        x, w = node.inputs[0], node.inputs[1]
        res = node.inputs[-1] if node.attr["residual"] else None        # fused residual add (passes.fuse)
        rest = node.inputs[2:len(node.inputs) - (res is not None)]
        bias = rest[0] if rest else None
        fmt: SparseFormat = self.consts[w].value
        xt = self.types[x]
        k = xt.shape[-1]
        tokens = math.prod(xt.shape[:-1])
        o = fmt.rows
        dtype = xt.dtype
        if fmt.dtype_name != dtype:
            raise ModelError(f"{node.where()}: weight %{w} is {fmt.dtype_name}, activation is {dtype}")
        func, args, knobs = matmul_primfunc(fmt, tokens, bias=bias is not None,
                                            activation=node.attr["activation"], target=self.target,
                                            knobs=self.knobs_for(fmt, tokens), residual=res is not None)
        epi = "+".join(e for e in (node.attr["activation"], "residual" if res is not None else None) if e)
        sym = self.add_func(func, f"{fmt.name} matmul {o}x{k} T={tokens} knobs={knobs}"
                            + (f" (fused: {epi})" if epi else ""), f"{fmt.name}_mm")
        x2 = self.temp(node.name + ".x2", TensorType((tokens, k), dtype), alias=x)
        if tokens == 1:
            xT = self.temp(node.name + ".xT", TensorType((k, 1), dtype), alias=x2)
        else:
            xT = self.transpose2d(x2, tokens, k, dtype, node.name + ".xT")
        buffers = [self.const_value(f"{w}/{b}", getattr(fmt, b)) for b in fmt.buffers]
        rT = []
        if res is not None:     # the residual in the kernel's feature-major layout (a view at one token)
            r2 = self.temp(node.name + ".r2", TensorType((tokens, o), dtype), alias=self.arg(res))
            rT = [self.temp(node.name + ".rT", TensorType((o, 1), dtype), alias=r2) if tokens == 1
                  else self.transpose2d(r2, tokens, o, dtype, node.name + ".rT")]
        yT = self.temp(node.name + ".yT", TensorType((o, tokens), dtype))
        call = buffers + [xT] + ([self.arg(bias)] if bias is not None else []) + rT + [yT]
        if len(call) != len(args):
            raise ModelError(f"{node.where()}: kernel expects {len(args)} arguments, planned {len(call)}")
        self.step(sym, call, node.name)
        if tokens == 1:
            y2 = self.temp(node.name + ".y2", TensorType((1, o), dtype), alias=yT)
        else:
            y2 = self.transpose2d(yT, o, tokens, dtype, node.name + ".y2")
        self.define(node.name, node.type, alias=y2)

    def sparse_conv(self, node: Node) -> None:
        from sparsec.backends.kernels import matmul_primfunc
        from sparsec.backends.kernels.conv import ConvSpec, im2col_primfunc

        x, w = node.inputs[0], node.inputs[1]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        fmt: SparseFormat = self.consts[w].value
        n, c, h, wd = self.types[x].shape
        o, _, kh, kw = fmt.shape
        a = node.attr
        spec = ConvSpec(n, c, h, wd, (kh, kw), tuple(a["stride"]), tuple(a["padding"]), tuple(a["dilation"]),
                        self.types[x].dtype)
        ho, wo = spec.out_hw
        tokens = n * ho * wo
        kdim = c * kh * kw
        dtype = self.types[x].dtype
        cols = self.temp(node.name + ".cols", TensorType((kdim, tokens), dtype))
        f_col = im2col_primfunc(spec)
        sym = self.add_func(f_col, f"im2col {spec}", "im2col")
        self.step(sym, [x, cols], node.name)
        func, args, knobs = matmul_primfunc(fmt, tokens, bias=bias is not None, activation=None,
                                            target=self.target, knobs=self.knobs_for(fmt, tokens))
        sym = self.add_func(func, f"{fmt.name} conv-matmul {o}x{kdim} T={tokens}", f"{fmt.name}_mm")
        yT = self.temp(node.name + ".yT", TensorType((o, tokens), dtype))
        buffers = [self.const_value(f"{w}/{b}", getattr(fmt, b)) for b in fmt.buffers]
        self.step(sym, buffers + [cols] + ([self.arg(bias)] if bias is not None else []) + [yT], node.name)
        if n == 1:
            self.define(node.name, node.type, alias=yT)
        else:   # [O, N, Ho*Wo] -> [N, O, Ho*Wo]
            from sparsec.backends import te_ops

            t3 = TensorType((o, n, ho * wo), dtype)
            y3 = self.temp(node.name + ".y3", t3, alias=yT)
            pnode = make_node("p", Op.PERMUTE, ["x"], {"dims": (1, 0, 2)}, {"x": t3})
            func = te_ops.schedule_cpu(te_ops.build_node_func(pnode, [t3], {}, global_symbol="f"), self.target)
            sym = self.add_func(func, f"permute {t3}", "permute")
            y4 = self.temp(node.name + ".y4", TensorType((n, o, ho * wo), dtype))
            self.step(sym, [y3, y4], node.name)
            self.define(node.name, node.type, alias=y4)

    def lower(self, node: Node) -> None:
        kind = self.kind(node)
        if kind == "view":
            self.define(node.name, node.type, alias=node.inputs[0])
        elif kind == "linear":
            self.linear(node)
        elif kind == "sparse_conv":
            self.sparse_conv(node)
        elif not self.fused_into.get(node.name):      # fused nodes are computed by their user
            self.define(node.name, node.type)
            self.te_node(node, node.name)


def compile_graph(g: Graph, target=None, progress: Callable[[int, int, str], None] | None = None,
                  knobs_for: Callable | None = None, te_knobs_for: Callable | None = None,
                  lower_only: bool = False) -> CompiledGraph:
    """Lower every node, build one library, plan the buffers.

    ``knobs_for(fmt, tokens)`` may return kernel knobs for a matmul (tuned values);
    ``te_knobs_for(site)`` schedule knobs for a TE function or transpose (``backends/te/sites.py``),
    by default ``knobs_for.te`` when the matmul hook carries one (the tuning database's).
    ``lower_only``: stop before the build; the result's ``sites`` lists the tunable functions.
    """
    import tvm

    from sparsec.backends.target import host_target

    # a bare "llvm" means this machine: its CPU model and SIMD width (a plain "llvm" target is
    # generic x86-64, SSE2 only, and made kernels ~4x slower)
    if target is None or target == "llvm":
        target = host_target()
    elif isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    t0 = time.perf_counter()
    p = _Planner(g, target, knobs_for, te_knobs_for or getattr(knobs_for, "te", None))
    p.input_names = {v.name for v in g.inputs}
    p.plan_fusion()
    for v in g.inputs:
        p.define(v.name, v.type)
    for i, node in enumerate(g.nodes):
        if progress:
            progress(i, len(g.nodes), node.name)
        try:
            p.lower(node)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"compile: {node.where()}: {type(exc).__name__}: {exc}") from exc
    # outputs that are constants or inputs need a storage copy of their own: not supported as such
    for o in g.outputs:
        if o not in p.values or p.values[o]["kind"] == "const":
            raise ModelError(f"output %{o} is a constant; sparsec compiles computed outputs only")
    p.drop_dead_steps(set(g.outputs))
    if lower_only:
        return CompiledGraph(g, target, None, {}, {}, p.func_doc, {}, sites=list(p.sites.values()))
    t1 = time.perf_counter()
    mod = tvm.IRModule({s["func"]: p.funcs[s["func"]] for s in p.steps})
    with target:
        lib = tvm.tirx.build(mod, target=target)
    t2 = time.perf_counter()
    nbytes = {}
    for v in p.order:
        t = p.types[v]
        nbytes[v] = math.prod(t.shape) * torch.empty((), dtype=getattr(torch, t.dtype)).element_size()
    keep = {v.name for v in g.inputs} | set(g.outputs)
    assign = plan_storages(p.order, p.defs, p.uses, p.alias_of, nbytes, keep)
    for v in p.order:
        p.values[v]["storage"] = assign[v]
    used_args = {a for st in p.steps for a in st["args"]}
    for v in list(p.values):   # values of dropped steps, and weights no step reads any more
        if (p.values[v]["kind"] == "const" and v not in used_args) or (p.values[v]["kind"] != "const"
                                                                        and v not in assign):
            if p.values[v]["kind"] == "const":
                p.const_tensors.pop(p.values[v]["const"], None)
            del p.values[v]
    for v in g.inputs:
        p.values[v.name]["kind"] = "input"
    plan = {"inputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype} for v in g.inputs],
            "outputs": list(g.outputs), "storages": list(plan_storages.sizes), "values": p.values,
            "steps": p.steps}
    timings = {"lower_s": t1 - t0, "build_s": t2 - t1, "functions": len({s["func"] for s in p.steps}),
               "steps": len(p.steps)}
    return CompiledGraph(g, target, lib, plan, p.const_tensors, p.func_doc, timings, sites=list(p.sites.values()))
