"""Whole-graph compile for CUDA: IR graph -> one TVM library with an ``sm_XX`` fatbin + an executor plan.

The same planner as the CPU backend (``sparsec.backends.llvm.compile._Planner``:
values, views, fusion of injective producers, liveness-planned storages,
one function per distinct kernel), with CUDA lowerings:

- ``linear`` with a constant weight (any format, Dense included) runs the
  weight format's CUDA kernel family (``cuda_matmul_primfunc``), which works in
  torch's token-major layout ``Y[T, O] = act(X[T, K] @ W^T + b)``: the input
  and output are views, no transposes;
- ``conv2d`` with a sparse constant weight: a token-major im2col (TE), the
  matmul family, and a permute back to NCHW;
- every other node: its TE lowering (``sparsec.backends.te.rules``) with a GPU
  schedule (``sparsec.backends.te.schedule_cuda``: dlight rules, else a plain
  thread binding) — attention's batched matmuls, softmax, layer norm, ...

Weights are cast to the chosen dtype at compile time (``cast_model``): the
model and its floating example inputs are converted *before* export, so torch
itself infers every dtype of the graph.

The library is built by ``sparsec.backends.cuda.toolchain.build`` (stub driver
+ nvcc; no GPU needed) and exported with the device code embedded as a fatbin.
Running it needs an NVIDIA GPU (``sparsec.backends.cuda.executor``).
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from sparsec.backends.llvm.compile import _Planner
from sparsec.backends.runtime import plan_storages
from sparsec.ir.errors import ModelError, ParameterError
from sparsec.ir.formats import Dense, SparseFormat
from sparsec.ir.graph import Graph, Node, make_node
from sparsec.ir.ops import Op
from sparsec.ir.types import TensorType

DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_DTYPE = "float16"
# cuda --format auto: the format and kernel design come from the H100 cost rule (backends/cuda/select.py);
# a bitmap weight uses the 8x32 tile (the fragment kernel's fast path)
BITMAP_TILE = (8, 32)
# N:M patterns auto picks nm for (the slot loaders verified on the H100); others go by density
NM_FAST = ((2, 4), (1, 4), (2, 8), (4, 16))


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ParameterError(f"--dtype {dtype!r} is not supported for --target cuda; choose one of {', '.join(DTYPES)}")
    return dtype


def cast_model(model: torch.nn.Module, inputs: tuple, dtype: str) -> tuple[torch.nn.Module, tuple]:
    """A copy of ``model`` with floating parameters/buffers in ``dtype``; floating inputs cast too."""
    dt = getattr(torch, check_dtype(dtype))
    m = copy.deepcopy(model).to(dt)
    ins = tuple(x.to(dt) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)
    return m.eval(), ins


# -- format selection for the GPU ------------------------------------------------------------------

def cuda_choice(name: str, w: torch.Tensor, fmt: str, pattern, tokens: int = 1, arch: str = "sm_90",
                tuning_db=None, fused: bool = False):
    """The format of one weight on CUDA: ``fmt`` if forced (bitmap with the 8x32 tile), else the fastest
    (format, kernel design) by the H100 cost rule (``backends/cuda/select.py``) at ``tokens`` tokens,
    dense always a candidate: a sparse format only where one of its designs is predicted faster than
    every dense design (by ``SPARSE_MARGIN``). Where the tuning database (``tuning_db``; ``False``: none) has
    measured both the tiled kernel at this density and the dense wgmma GEMM for the layer (``tune.lookup_pair``,
    ``fused``: the layer gets a fused activation), the faster measured one is chosen instead."""
    from sparsec.backends.cuda import select as S
    from sparsec.passes.select import Choice, choose, detect_nm, matrix_dims

    rows, k = matrix_dims(tuple(w.shape))
    w2 = w.reshape(rows, k)
    density = float(torch.count_nonzero(w2)) / max(w2.numel(), 1)
    if fmt == "bitmap":
        return Choice(name, "bitmap", {"tile": BITMAP_TILE}, density, "forced (tile 8x32: the CUDA fast path)")
    if fmt != "auto":
        return choose(name, w, fmt, pattern)
    nm = detect_nm(w2) if density <= 0.5 else None
    sparse = ["nm"] if nm in NM_FAST else (["bitmap"] if density <= S.SPARSE_MAX_DENSITY else [])
    dtype = str(w.dtype).replace("torch.", "")
    cands = S.choose(rows, k, tokens, density, dtype, sparse, arch=arch, nm=nm)
    pick, dense = S.pick(cands)
    params = {"n": nm[0], "m": nm[1]} if pick["format"] == "nm" else \
        {"tile": BITMAP_TILE} if pick["format"] == "bitmap" else {}
    what = f"{nm[0]}:{nm[1]} " if pick["format"] == "nm" else ""
    if pick is dense:
        alt = [c for c in cands if c["format"] != "dense"]
        why = (f"; best sparse {alt[0]['format']} {alt[0]['design']} {alt[0]['predicted_us']} us" if alt else
               f"; density {density:.1%}: no sparse candidate")
    else:
        why = f" vs dense {dense['design']} {dense['predicted_us']} us"
    reason = (f"T={tokens}: {what}{pick['format']} {pick['design']} predicted {pick['predicted_us']} us"
              f"{why} (H100 cost rule, backends/cuda/select.py)")
    measured = None
    if sparse == ["bitmap"] and tuning_db is not False:
        from sparsec.backends.cuda.tune import lookup_pair

        measured = lookup_pair(rows, k, tokens, density, dtype, arch, tuning_db, fused)
    ct = next((c for c in cands if (c["format"], c["design"]) == ("bitmap", "tiled")), None)
    cw = next((c for c in cands if (c["format"], c["design"]) == ("dense", "wgmma")), None)
    if measured and ct is not None and cw is not None:
        # measured beats predicted: the tiled kernel against the dense GEMM, as `sparsec autotune` timed them
        (t_us, rec, path), (d_us, _, _) = measured["tiled"], measured["dense"]
        ct, cw = dict(ct, measured_us=round(t_us, 2)), dict(cw, measured_us=round(d_us, 2))
        cands = [ct if c["design"] == "tiled" and c["format"] == "bitmap" else
                 cw if c["design"] == "wgmma" and c["format"] == "dense" else c for c in cands]
        pick = ct if t_us < d_us else cw
        params = {"tile": BITMAP_TILE} if pick is ct else {}
        reason = (f"T={tokens}: {pick['format']} {pick['design']}, measured {t_us:.1f} us (tiled) vs {d_us:.1f} us "
                  f"(dense wgmma) on {rec.host} ({os.path.basename(path)}); the cost rule predicted "
                  f"{ct['predicted_us']} / {cw['predicted_us']} us")
    ch = Choice(name, pick["format"], params, density, reason)
    ch.candidates = [{**c, "chosen": c is pick} for c in cands]
    return ch


def select_formats_cuda(g: Graph, fmt: str, pattern, choices: list, arch: str = "sm_90", tuning_db=None) -> Graph:
    from sparsec.passes.fuse import fuse_activations
    from sparsec.passes.select import FORMAT_CHOICES, pack_choice, parse_pattern, weight_tokens
    from sparsec.passes.sparsify import prunable_weights

    if fmt not in FORMAT_CHOICES:
        raise ParameterError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMAT_CHOICES)}")
    pat = parse_pattern(pattern) if pattern is not None else None
    tokens = weight_tokens(g)
    # the weights whose linear the fusion pass (after this one) gives an activation: their tuning keys differ
    fused = {n.inputs[1] for n in fuse_activations(g).nodes
             if n.op == Op.LINEAR and n.attr.get("activation") and len(n.inputs) > 1}
    for name in prunable_weights(g):
        c = g.constant(name)
        w = c.dense()
        if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            continue
        ch = cuda_choice(name, w, fmt, pat, tokens.get(name, 1), arch, tuning_db, name in fused)
        ch.tokens = tokens.get(name, 1)
        choices.append(ch)
        if ch.format != "dense" or not isinstance(c.value, Dense):
            g = g.with_constant(name, pack_choice(w, ch))
    return g


def cuda_pipeline(pattern, sparsity, fmt: str, choices: list, spec: str | None = None, arch: str = "sm_90",
                  tuning_db=None):
    from sparsec.passes.canonicalize import canonicalize_matmul
    from sparsec.passes.fuse import fuse_epilogues
    from sparsec.passes.sparsify import sparsify

    passes = [("canonicalize_matmul", canonicalize_matmul)]
    if spec is not None:
        from sparsec.passes.spec import load_spec, sparsify_by_spec
        s = load_spec(spec)
        passes.append(("sparsify_by_spec", lambda g: sparsify_by_spec(g, s)))
    elif pattern is not None:
        passes.append(("sparsify", lambda g: sparsify(g, pattern, sparsity)))
    import inspect

    # the CUDA kernels fuse bias + activation, not a residual add (that stays a TE add, fused with its users)
    fuse = (lambda g: fuse_epilogues(g, residual=False)) if "residual" in inspect.signature(fuse_epilogues).parameters \
        else fuse_epilogues
    passes += [("select_formats_cuda", lambda g: select_formats_cuda(g, fmt, pattern, choices, arch, tuning_db)),
               ("fuse_epilogues", fuse)]
    return passes


# -- the planner -----------------------------------------------------------------------------------

def im2col_tokens_func(n, c, h, w, kh, kw, stride, padding, dilation, dtype):
    """``cols[N*Ho*Wo, C*kh*kw]`` (token-major, torch's weight column order) of an NCHW input."""
    from tvm import te, tirx

    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    x = te.placeholder((n, c, h, w), dtype, name="X")

    def f(t, kk):
        b, r = t // (ho * wo), t % (ho * wo)
        oy, ox = r // wo, r % wo
        ci, rr = kk // (kh * kw), kk % (kh * kw)
        ky, kx = rr // kw, rr % kw
        y = oy * stride[0] - padding[0] + ky * dilation[0]
        xx = ox * stride[1] - padding[1] + kx * dilation[1]
        inside = tirx.all(y >= 0, y < h, xx >= 0, xx < w)
        return tirx.if_then_else(inside, x[b, ci, tirx.max(tirx.min(y, h - 1), 0), tirx.max(tirx.min(xx, w - 1), 0)],
                                 tirx.const(0, dtype))

    cols = te.compute((n * ho * wo, c * kh * kw), f, name="cols")
    return te.create_prim_func([x, cols]), ho, wo


def softmax_cuda(node: Node, x, out: TensorType):
    """softmax / log_softmax over one dim for CUDA: the TE rule's math (fp32 for half inputs) with the
    standard ``max`` reducer, which TVM's cross-thread reduction lowering matches (the rule's NaN-aware
    max is not), so dlight's GeneralReduction gives one thread block per row. NaN inputs: a row with a
    NaN gives NaN here too (the NaN reaches the sum)."""
    from tvm import te, tirx

    from sparsec.backends.te.rules import _acc, _cast

    shape = tuple(int(s) for s in x.shape)
    d = node.attr["dim"] % len(shape)
    ct = _acc(out.dtype)
    log = node.op == Op.LOG_SOFTMAX

    def row(i, j):
        k = list(i)
        k[d] = j
        return tuple(k)

    def red(name, body, reducer):
        def f(*i):
            r = te.reduce_axis((0, shape[d]), name=name + "_r")
            return reducer(body(i, r), axis=r)
        rshape = list(shape)
        rshape[d] = 1
        return te.compute(tuple(rshape), f, name=name)

    mx = red("softmax_max", lambda i, r: _cast(x[row(i, r)], ct), te.max)
    sm = red("softmax_sum", lambda i, r: tirx.exp(_cast(x[row(i, r)], ct) - mx[row(i, 0)]), te.sum)

    def f(*i):
        v = _cast(x[i], ct) - mx[row(i, 0)]
        r = v - tirx.log(sm[row(i, 0)]) if log else tirx.exp(v) / sm[row(i, 0)]
        return _cast(r, out.dtype)

    return te.compute(tuple(out.shape), f, name=node.op.value)


class _CudaPlanner(_Planner):
    def __init__(self, g: Graph, target, arch: str, tuning_db=None):
        super().__init__(g, target)
        self.arch = arch
        self.tuning_db = tuning_db            # `sparsec autotune --target cuda` records (backends/cuda/tune.py)
        self.kernels: dict[str, dict] = {}    # matmul node -> format, design, predicted time (manifest "kernels")

    def kind(self, node: Node) -> str:
        if (node.op == Op.EXPAND and node.inputs[0] not in self.consts
                and tuple(self.types[node.inputs[0]].shape) == tuple(node.type.shape)):
            return "view"                     # an expand to the same shape is the identity: no copy
        k = super().kind(node)
        if k == "te" and node.op == Op.CONV2D:
            w = node.inputs[1]
            if w in self.consts and not isinstance(self.consts[w].value, Dense):
                raise ModelError(f"{node.where()}: --target cuda: a sparse conv2d weight needs groups == 1 "
                                 f"(groups={node.attr['groups']}); use --spec to keep it dense")
        return k

    def lower_root(self, node: Node, tensor):
        """Softmax gets its CUDA form (a max reducer dlight can bind to threads); the rest the TE rule."""
        if node.op in (Op.SOFTMAX, Op.LOG_SOFTMAX) and node.type.shape and node.type.dtype in DTYPES:
            return softmax_cuda(node, tensor(node.inputs[0]), node.type)
        return super().lower_root(node, tensor)

    def schedule_te(self, func, node: Node, key, externals: list[str], doc: str):
        """GPU schedule (dlight rules or plain thread binding); the schedule's name goes into the doc."""
        from sparsec.backends.te.schedule_cuda import schedule_cuda

        func = schedule_cuda(func, self.target)
        doc += f" [{func.attrs['sparsec.gpu_schedule']}]" if "sparsec.gpu_schedule" in func.attrs else ""
        return func, doc

    def _matmul(self, node: Node, fmt: SparseFormat, x2: str, tokens: int, bias, activation, what: str) -> str:
        """One matmul step; the kernel design is the fastest of the stored format's designs by the H100
        cost rule (``select.best_design``) at this token count; a design whose kernel cannot be generated
        for the shape (e.g. shared memory) falls back to the fragment family."""
        from sparsec.backends.cuda import select as S
        from sparsec.backends.cuda.kernels.matmul import cuda_matmul_primfunc
        from sparsec.backends.cuda.tuned import knobs_for

        k, o = math.prod(fmt.shape[1:]), fmt.shape[0]
        dtype = self.types[x2].dtype
        if fmt.dtype_name != dtype:
            raise ModelError(f"{node.where()}: weight is {fmt.dtype_name}, activation is {dtype}")
        w = node.inputs[1]
        density = fmt.nnz / max(o * k, 1) if fmt.name != "dense" else 1.0
        ranked, dense_us = S.ranked_designs(fmt.name, o, k, tokens, density, dtype, activation is not None,
                                            self.arch)
        # where the tuning database measured this layer both ways (``tune.lookup_pair``: the tiled kernel at the
        # weight's density and the dense wgmma GEMM), ``cuda_choice`` chose the format by that measurement: the
        # measured design runs (tiled for a bitmap weight, wgmma for a dense one), not a predicted other one
        measured = {"bitmap": "tiled", "dense": "wgmma"}.get(fmt.name)
        if measured and self.tuning_db is not False and any(d == measured for d, _ in ranked[1:]):
            from sparsec.backends.cuda.tune import lookup_pair

            if lookup_pair(o, k, tokens, fmt.nnz / max(o * k, 1), dtype, self.arch, self.tuning_db,
                           fused=activation is not None):
                ranked = sorted(ranked, key=lambda r: r[0] != measured)
        func, tuned = None, None
        for design, us in ranked:         # the fastest design whose kernel this shape allows
            if design == "fragment":
                us = S.predict_us(fmt.name, "fragment", o, k, tokens, density) if us == math.inf else us
                break
            tries = [None]
            if design == "wgmma" and fmt.name == "dense":
                # a dense layer's tuned wgmma knobs (backends/cuda/tune.py, kind "dense"), else the defaults
                from sparsec.backends.cuda.tune import lookup

                hit = lookup(o, k, tokens, 1.0, dtype, self.arch, self.tuning_db, fused=activation is not None,
                             kind="dense")
                tries = ([hit] if hit else []) + [(S.wgmma_knobs(o, k, tokens), None, None), None]
            if design == "wgmma" and fmt.name == "nm":
                tries = [(S.wgmma_knobs(o, k, tokens, sparse=True), None, None), None]
            if design == "tiled":
                # the tuning database's fastest correct knobs for this key (backends/cuda/tune.py: a layer with a
                # fused activation has keys of its own), else the planner's; tuned knobs the kernel refuses fall
                # back to the planner's
                from sparsec.backends.cuda.tune import lookup

                hit = lookup(o, k, tokens, density, dtype, self.arch, self.tuning_db, fused=activation is not None)
                tries = ([hit] if hit else []) + [(S.tiled_knobs(density, tokens, self.arch, activation is not None),
                                                   None, None)]
            for kn in tries:
                try:
                    func, args, knobs = cuda_matmul_primfunc(fmt, tokens, bias=bias is not None,
                                                             activation=activation, design=design,
                                                             knobs=kn[0] if kn else None)
                    tuned = kn if kn and kn[1] is not None else None
                    break
                except Exception:  # noqa: BLE001  (this shape is outside the design: the next one runs it)
                    continue
            if func is not None:
                break
        if func is None:
            try:
                func, args, knobs = cuda_matmul_primfunc(fmt, tokens, bias=bias is not None, activation=activation,
                                                         knobs=knobs_for(fmt.name, o, k, tokens))
            except Exception as exc:
                raise ModelError(f"{node.where()}: --target cuda: {fmt.name} {o}x{k} weight: {exc}") from None
        if design == "tiled":
            from sparsec.backends.cuda.kernels import tiled_layout

            # "tiled.<rt>.<sc>.<code>[.wg|.wgx|.wsp].<buffer>": what the layout depends on (mma="wg": the wgmma
            # slot map; xa=1: its column order for activations in registers; sp=1: the 2:4 operand + residual)
            tag = ".".join([str(knobs["rt"]), str(knobs["sc"]), knobs.get("code", "pos")]
                           + ([("wgx" if knobs.get("xa") else "wsp" if knobs.get("sp") else "wg")]
                              if knobs.get("mma") == "wg" else []))
            layout, names = tiled_layout.build_for(fmt, knobs)   # kernel-private layout, from the format's buffers
            buffers = [self.const_value(f"{w}/tiled.{tag}.{b}", layout[b]) for b in names]
        elif design in ("mma", "wgmma") and fmt.name == "nm":
            from sparsec.backends.cuda.kernels import mma_layout

            # mma.sp / wgmma.sp operands from the format's buffers (ar > 0: the values in register order, sp_frag)
            layout, names = mma_layout.build_for(fmt, knobs)
            buffers = [self.const_value(f"{w}/mma.{b}", layout[b]) for b in names]
        else:
            buffers = [self.const_value(f"{w}/{b}", getattr(fmt, b)) for b in fmt.buffers]
        sym = self.add_func(func, f"{fmt.name} {what} {o}x{k} T={tokens} design={design} knobs={knobs}",
                            f"{fmt.name}_{design}_mm")
        self.kernels[node.name] = {"weight": w, "format": fmt.name, "design": design, "shape": [o, k],
                                   "tokens": tokens, "density": round(density, 4), "activation": activation,
                                   "knobs": knobs,
                                   "predicted_us": round(us, 2), "dense_predicted_us": round(dense_us, 2),
                                   **({"tuned": {"measured_us": round(tuned[1].time_s * 1e6, 2), "on": tuned[1].host,
                                                 "db": tuned[2]}} if tuned else {}),
                                   "function": sym}
        y2 = self.temp(node.name + ".y2", TensorType((tokens, o), dtype))
        call = buffers + [x2] + ([self.arg(bias)] if bias is not None else []) + [y2]
        if len(call) != len(args):
            raise ModelError(f"{node.where()}: kernel expects {len(args)} arguments, planned {len(call)}")
        self.step(sym, call, node.name)
        return y2

    def linear(self, node: Node) -> None:
        if node.attr.get("residual"):
            raise ModelError(f"{node.where()}: --target cuda: the CUDA matmul kernels take no residual operand "
                             f"(run fuse_epilogues with residual=False)")
        x, w = node.inputs[0], node.inputs[1]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        fmt: SparseFormat = self.consts[w].value
        xt = self.types[x]
        k = xt.shape[-1]
        tokens = math.prod(xt.shape[:-1])
        x2 = self.temp(node.name + ".x2", TensorType((tokens, k), xt.dtype), alias=x)
        y2 = self._matmul(node, fmt, x2, tokens, bias, node.attr["activation"], "matmul")
        self.define(node.name, node.type, alias=y2)

    def sparse_conv(self, node: Node) -> None:
        from sparsec.backends import te_ops
        from sparsec.backends.te.schedule_cuda import schedule_cuda

        x, w = node.inputs[0], node.inputs[1]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        fmt: SparseFormat = self.consts[w].value
        n, c, h, wd = self.types[x].shape
        o, _, kh, kw = fmt.shape
        a = node.attr
        dtype = self.types[x].dtype
        f_col, ho, wo = im2col_tokens_func(n, c, h, wd, kh, kw, tuple(a["stride"]), tuple(a["padding"]),
                                           tuple(a["dilation"]), dtype)
        tokens, kdim = n * ho * wo, c * kh * kw
        sym = self.add_func(schedule_cuda(f_col, self.target), f"im2col {n}x{c}x{h}x{wd} k{kh}x{kw} (token-major)",
                            "im2col")
        cols = self.temp(node.name + ".cols", TensorType((tokens, kdim), dtype))
        self.step(sym, [x, cols], node.name)
        y2 = self._matmul(node, fmt, cols, tokens, bias, None, "conv-matmul")
        t3 = TensorType((n, ho * wo, o), dtype)     # [N*Ho*Wo, O] -> [N, O, Ho*Wo]
        y3 = self.temp(node.name + ".y3", t3, alias=y2)
        pnode = make_node("p", Op.PERMUTE, ["x"], {"dims": (0, 2, 1)}, {"x": t3})
        func = schedule_cuda(te_ops.build_node_func(pnode, [t3], {}, global_symbol="f"), self.target)
        sym = self.add_func(func, f"permute {t3}", "permute")
        y4 = self.temp(node.name + ".y4", TensorType((n, o, ho * wo), dtype))
        self.step(sym, [y3, y4], node.name)
        self.define(node.name, node.type, alias=y4)


@dataclass
class CompiledCuda:
    graph: Graph
    target: object
    module: object                       # the built tvm module (host code + fatbin)
    plan: dict
    consts: dict[str, torch.Tensor]
    arch: str
    dtype: str
    functions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    kernels: dict[str, dict] = field(default_factory=dict)   # per matmul node: format, design, predictions

    @property
    def manifest_info(self) -> dict:
        return {"device": "cuda", "arch": self.arch, "dtype": self.dtype, "kernels": self.kernels}

    def executor(self):
        from sparsec.backends.cuda.executor import CudaExecutor

        return CudaExecutor(self.module, self.plan, self.consts)


def lower_graph_cuda(g: Graph, arch: str = "sm_90", progress: Callable[[int, int, str], None] | None = None,
                     tuning_db=None) -> "_CudaPlanner":
    """Lower every node for CUDA (kernel choice per matmul: ``planner.kernels``); nothing is built."""
    from sparsec.backends.cuda import toolchain

    toolchain.check_arch(arch)
    toolchain.ensure_cuda_codegen()
    target = toolchain.cuda_target(arch)
    p = _CudaPlanner(g, target, arch, tuning_db)
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
            msg = str(exc).strip().splitlines()
            raise ModelError(f"compile --target cuda: {node.where()}: {type(exc).__name__}: "
                             f"{msg[0] if msg else ''}") from exc
    return p


def compile_graph_cuda(g: Graph, arch: str = "sm_90", dtype: str = DEFAULT_DTYPE,
                       progress: Callable[[int, int, str], None] | None = None, tuning_db=None) -> CompiledCuda:
    """Lower every node for CUDA, build one library (fatbin for ``arch``), plan the buffers. ``tuning_db``: a
    ``TuningDB`` whose CUDA records (``sparsec autotune --target cuda``) pick the tiled kernels' knobs."""
    import tvm

    from sparsec.backends.cuda import toolchain

    toolchain.check_arch(arch)
    toolchain.ensure_cuda_codegen()
    toolchain.nvcc_path()
    t0 = time.perf_counter()
    p = lower_graph_cuda(g, arch, progress, tuning_db)
    target = p.target
    for o in g.outputs:
        if o not in p.values or p.values[o]["kind"] == "const":
            raise ModelError(f"output %{o} is a constant; sparsec compiles computed outputs only")
    p.drop_dead_steps(set(g.outputs))
    t1 = time.perf_counter()
    mod = tvm.IRModule({s["func"]: p.funcs[s["func"]] for s in p.steps})
    try:
        lib = toolchain.build(mod, arch)
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise ModelError(f"compile --target cuda: building the CUDA library failed: {type(exc).__name__}: "
                         f"{msg[-1] if msg else ''}") from exc
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
    for v in list(p.values):
        if (p.values[v]["kind"] == "const" and v not in used_args) or (p.values[v]["kind"] != "const"
                                                                        and v not in assign):
            if p.values[v]["kind"] == "const":
                p.const_tensors.pop(p.values[v]["const"], None)
            del p.values[v]
    for v in g.inputs:
        p.values[v.name]["kind"] = "input"
    plan = {"inputs": [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype} for v in g.inputs],
            "outputs": list(g.outputs), "storages": list(plan_storages.sizes), "values": p.values,
            "steps": p.steps, "device": "cuda"}
    timings = {"lower_s": t1 - t0, "build_s": t2 - t1, "functions": len({s["func"] for s in p.steps}),
               "steps": len(p.steps)}
    live = {s["node"] for s in p.steps}
    kernels = {n: k for n, k in p.kernels.items() if n in live}
    return CompiledCuda(g, target, lib, plan, p.const_tensors, arch, dtype, p.func_doc, timings, kernels)
