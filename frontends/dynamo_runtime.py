"""The callables the torch.compile backend returns (see ``sparsec.frontends.dynamo``).

- ``CompiledFx``: one ATen fx graph whose every op is in the IR set. At the
  first real call (and whenever a guarded weight changes) it lowers the graph
  with ``FxLowering`` (parameters and buffers become IR constants holding their
  real values), runs the backend's pass pipeline and compiles it with the CPU
  backend (or, in ``interp`` mode, runs the reference interpreter).
- ``SpecializedFx``: an ATen graph as aot_autograd hands it over (possibly with
  symbolic shapes, possibly with ops outside the IR): per concrete input shape
  it makes a static graph, partitions it into supported subgraphs (each a
  ``CompiledFx``) and eagerly-run ATen nodes, and caches the result by shape.

Weight guard: the tensors treated as constants are recorded as
``(id(t), t._version, t.data_ptr())``; a change in any of them re-lowers the
graph and re-packs the formats. When the result has the same kernels (same
graph, formats and format parameters — N:M masks refreshed, weights updated
by an optimizer step) the new buffers are copied into the compiled module's
constant storage and nothing is rebuilt; otherwise the graph is recompiled
(compiled modules are cached by that kernel signature).
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten, tree_unflatten

from sparsec.frontends.lower import ALIASES, IGNORED, LOWERINGS, FxLowering, op_name, user_source
from sparsec.ir.errors import ModelError
from sparsec.ir.graph import Graph

log = logging.getLogger("sparsec.dynamo")


# -- which tensors are constants --------------------------------------------------------

def _ptr_key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


class Statics:
    """Tensors the backend treats as IR constants: parameters, module buffers, BDWP masks.

    Parameters are recognised by type; the others are registered (strong
    references, so an id is never reused while registered). A tensor that
    aot_autograd saved for backward arrives as another object over the same
    memory, so storage (pointer, shape, strides, dtype) matches too. A wrong
    match costs speed, never correctness: every constant is guarded.
    """

    def __init__(self):
        self._by_id: dict[int, torch.Tensor] = {}
        self._by_ptr: dict[tuple, torch.Tensor] = {}

    def add(self, t: torch.Tensor) -> None:
        if isinstance(t, torch.Tensor) and not _is_fake(t):
            self._by_id[id(t)] = t
            self._by_ptr[_ptr_key(t)] = t

    def __contains__(self, t) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        return isinstance(t, torch.nn.Parameter) or id(t) in self._by_id or _ptr_key(t) in self._by_ptr


def _is_fake(t) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor) or (isinstance(t, torch.Tensor) and t.device.type == "meta")


def guard_key(t: torch.Tensor) -> tuple:
    return (id(t), t._version, t.data_ptr())


# -- options ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    target: str = "llvm"
    pattern: str | None = None
    sparsity: float | None = None
    format: str = "auto"
    train: str | None = None          # None | "bdwp"
    mask_interval: int = 1            # BDWP: masks recomputed every k training steps
    srste: float = 0.0
    fullgraph: bool = False
    mode: str = "compile"             # "compile" (TVM) | "interp" (reference interpreter)


# -- one supported graph ------------------------------------------------------------------

class LoweringFailed(ModelError):
    """Lowering failed at one fx node (``node``): the partitioner runs that node eagerly."""

    def __init__(self, msg: str, node: str):
        super().__init__(msg)
        self.node = node


def kernel_signature(g: Graph) -> tuple:
    """Everything a compiled module depends on, except constant values (and nnz)."""
    consts = []
    for c in g.constants:
        v = c.value
        bufs = tuple((b, str(getattr(v, b).dtype)) for b in v.buffers)
        scalar = c.dense().item() if len(v.shape) == 0 else None     # 0-d constants are baked into kernels
        consts.append((c.name, v.name, tuple(v.shape), v.dtype_name, repr(sorted(v.param_values().items())),
                       bufs, scalar))
    return (g.inputs, tuple(consts), g.nodes, g.outputs)


def const_tensors(g: Graph, plan: dict) -> dict[str, torch.Tensor]:
    """The constant buffers ``plan`` binds, taken from ``g`` (``"<weight>/<buffer>"`` or ``"<const>"``)."""
    cmap = g.constant_map()
    out = {}
    for v in plan["values"].values():
        if v["kind"] != "const":
            continue
        key = v["const"]
        if key in cmap:
            out[key] = cmap[key].dense().contiguous()
        else:
            w, b = key.rsplit("/", 1)
            out[key] = getattr(cmap[w].value, b).contiguous()
    return out


@dataclass
class _Compiled:
    cg: Any                     # CompiledGraph
    executor: Any


@dataclass
class _State:
    key: tuple
    run: Callable[[list], tuple]      # dynamic inputs -> computed outputs
    out_map: list                     # per flat output leaf: ("arg", i) | ("const", t) | ("out", j) | ("value", v)
    graph: Graph | None
    choices: list = field(default_factory=list)


class CompiledFx:
    """One ATen graph of supported ops, compiled at the first real call; guarded on its constants."""

    def __init__(self, gm: fx.GraphModule, opts: Options, statics: Statics, name: str = "sparsec"):
        self.gm, self.opts, self.statics, self.name = gm, opts, statics, name
        self.placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        out = next(n for n in gm.graph.nodes if n.op == "output")
        self.leaves, self.spec = tree_flatten(out.args[0])
        self._static_idx: tuple[int, ...] | None = None
        self.state: _State | None = None
        self._modules: dict[tuple, _Compiled] = {}
        self.stats = {"lowerings": 0, "builds": 0, "repacks": 0}

    # the graph to lower: outputs restricted to fx nodes that are not placeholders
    def _lowering_gm(self) -> tuple[fx.GraphModule, list]:
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        g.graph_copy(self.gm.graph, env)
        computed = []
        for leaf in self.leaves:
            if isinstance(leaf, fx.Node) and leaf.op != "placeholder" and env[leaf] not in computed:
                computed.append(env[leaf])
        g.output(tuple(computed))
        return fx.GraphModule(self.gm, g), computed

    def _refresh(self, args: list, key: tuple) -> None:
        from sparsec.passes.pipeline import run_passes

        static_idx = self._static_idx
        params, dyn = {}, []
        lgm, computed = self._lowering_gm()
        phs = [n for n in lgm.graph.nodes if n.op == "placeholder"]
        for i, (ph, a) in enumerate(zip(phs, args)):
            if isinstance(a, torch.Tensor):
                ph.meta["val"] = a
            if i in static_idx:
                params[ph.name] = a.detach()
            else:
                dyn.append(i)
                if not isinstance(a, torch.Tensor):
                    raise ModelError(f"{self.name}: input {ph.name} is {type(a).__name__}, not a tensor")
        lowering = FxLowering(lgm, params, name=self.name)
        try:
            g = lowering.run()
        except ModelError as exc:
            failed = lowering.node.name if lowering.node is not None else None
            raise LoweringFailed(str(exc), failed) from None
        self.stats["lowerings"] += 1
        choices: list = []
        if g.nodes:
            g = run_passes(g, pipeline(self.opts, choices))
        # where each output leaf comes from
        consts = g.constant_map()
        inputs = [v.name for v in g.inputs]
        node_outs: list[str] = []
        ir_of = dict(zip(computed, g.outputs))
        out_map = []
        ph_index = {ph.name: i for i, ph in enumerate(self.placeholders)}
        for leaf in self.leaves:
            if not isinstance(leaf, fx.Node):
                out_map.append(("value", leaf))
            elif leaf.op == "placeholder":
                out_map.append(("arg", ph_index[leaf.name]))
            else:
                name = ir_of[next(c for c in computed if c.name == leaf.name)]
                if name in consts:
                    out_map.append(("const", consts[name].dense()))
                elif name in inputs:
                    out_map.append(("arg", dyn[inputs.index(name)]))
                else:
                    if name not in node_outs:
                        node_outs.append(name)
                    out_map.append(("out", node_outs.index(name)))
        g = g.with_nodes(g.nodes, node_outs)
        LAST_GRAPHS[self.name] = g
        run = self._runner(g) if node_outs else (lambda xs: ())
        self.state = _State(key, run, out_map, g, choices)

    def _runner(self, g: Graph) -> Callable[[list], tuple]:
        if self.opts.mode == "interp":
            from sparsec.ir.interpret import interpret

            dense = {c.name: c.dense() for c in g.constants}
            return lambda xs: interpret(g, *xs, constants=dense)
        from sparsec.backends.llvm.compile import compile_graph
        from sparsec.backends.runtime import Executor

        sig = kernel_signature(g)
        hit = self._modules.get(sig)
        if hit is None:
            cg = compile_graph(g, self.opts.target)
            hit = self._modules[sig] = _Compiled(cg, cg.executor())
            self.stats["builds"] += 1
        else:
            new = const_tensors(g, hit.cg.plan)
            ex = hit.executor
            same = all(tuple(ex.views[n].shape) == tuple(new[v["const"]].shape)
                       for n, v in hit.cg.plan["values"].items() if v["kind"] == "const")
            if same:           # same kernels, same buffer shapes: re-pack in place
                for n, v in hit.cg.plan["values"].items():
                    if v["kind"] == "const":
                        ex.views[n].copy_(new[v["const"]])
            else:              # same kernels, other nnz: rebind the module to the new buffers
                plan = copy.deepcopy(hit.cg.plan)
                for v in plan["values"].values():
                    if v["kind"] == "const":
                        v["shape"] = list(new[v["const"]].shape)
                hit.executor = Executor(hit.cg.module, plan, new)
                hit.cg.plan = plan
            self.stats["repacks"] += 1
        return lambda xs: hit.executor(*xs)

    def __call__(self, *args):
        args = list(args)
        if self._static_idx is None:
            self._static_idx = tuple(i for i, a in enumerate(args) if a in self.statics)
        sidx = self._static_idx
        key = (tuple(guard_key(args[i]) for i in sidx),
               tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a
                     for i, a in enumerate(args) if i not in sidx))
        if self.state is None or self.state.key != key:
            self._refresh(args, key)
        st = self.state
        dyn = [a for i, a in enumerate(args) if i not in sidx]
        outs = st.run(dyn)
        flat = []
        for kind, v in st.out_map:
            if kind == "out":
                flat.append(outs[v])
            elif kind == "arg":
                flat.append(args[v])
            elif kind == "const":
                flat.append(v.clone())
            else:
                flat.append(v)
        return tree_unflatten(flat, self.spec)


def pipeline(opts: Options, choices: list):
    """The CPU pass list, after constant folding.

    BDWP training: the masks already prune, and the masked weights (W ⊙ mask_ff
    for the forward, (W ⊙ mask_bp)ᵀ for the backward) are packed N:M
    (``pack_nm``) instead of going through the format choice, unless a format is forced.
    """
    from sparsec.backends.llvm.pipeline import cpu_pipeline
    from sparsec.passes.canonicalize import canonicalize_matmul
    from sparsec.passes.fold_constants import fold_constants
    from sparsec.passes.fuse import fuse_epilogues

    fold = [("fold_constants", fold_constants)]
    if opts.train == "bdwp":
        if opts.format == "auto":
            from sparsec.passes.bdwp import parse_nm
            from sparsec.passes.pack_nm import pack_nm

            p = parse_nm(opts.pattern)
            return fold + [("canonicalize_matmul", canonicalize_matmul),
                           ("pack_nm", lambda g: pack_nm(g, p.n, p.m)), ("fuse_epilogues", fuse_epilogues)]
        return fold + cpu_pipeline(None, None, opts.format, choices)
    pattern, sparsity = opts.pattern, opts.sparsity
    if sparsity is not None and pattern is None:
        pattern = "unstructured"
    return fold + cpu_pipeline(pattern, sparsity, opts.format, choices)


# -- partitioning and shape specialisation -------------------------------------------------

def node_supported(n: fx.Node, constant: set[fx.Node] = frozenset()) -> bool:
    """In the IR op set, or foldable (every input a constant: the lowering evaluates it)."""
    if n.op != "call_function":
        return n.op in ("placeholder", "output", "get_attr")
    name = op_name(n.target)
    return name in LOWERINGS or name in ALIASES or name in IGNORED or n in constant


# ops whose value depends only on static shapes (the lowering folds them)
SHAPE_ONLY = {"scalar_tensor", "full", "zeros", "ones", "arange", "zeros_like", "ones_like", "full_like",
              "empty_like", "new_zeros", "new_ones", "new_full", "fill"}


def constant_nodes(gm: fx.GraphModule, static_placeholders: set[str]) -> set[fx.Node]:
    """Nodes whose value the lowering computes at compile time (from parameters, buffers, shapes)."""
    const: set[fx.Node] = set()
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if n.name in static_placeholders:
                const.add(n)
        elif n.op == "get_attr":
            const.add(n)
        elif n.op == "call_function":
            deps = n.all_input_nodes
            if op_name(n.target) in SHAPE_ONLY or (deps and all(d in const for d in deps)):
                const.add(n)
    return const


@dataclass
class Summary:
    """What one graph became: nodes compiled by sparsec vs run eagerly, and the eager ops."""

    graph: str
    compiled_nodes: int
    fallback_nodes: int
    fallback_ops: dict[str, int]
    subgraphs: int

    def __str__(self) -> str:
        s = (f"sparsec: {self.graph}: {self.compiled_nodes} nodes compiled in {self.subgraphs} subgraph(s), "
             f"{self.fallback_nodes} run eagerly")
        if self.fallback_ops:
            s += " (ops outside sparsec's IR: " + ", ".join(f"aten.{k} x{v}" for k, v in
                                                             sorted(self.fallback_ops.items())) + ")"
        return s


SUMMARIES: list[Summary] = []
# graph name -> the IR graph (after passes) it runs now: for tests and debugging
LAST_GRAPHS: dict[str, Graph] = {}


def _is_symbolic(gm: fx.GraphModule) -> bool:
    from torch.fx.experimental.symbolic_shapes import free_symbols

    for n in gm.graph.nodes:
        v = n.meta.get("val")
        if n.op == "placeholder" and not isinstance(v, torch.Tensor):
            return True
        if isinstance(v, torch.Tensor) and free_symbols(v):
            return True
    return False


def unsupported_error(n: fx.Node, graph: str) -> ModelError:
    src = user_source(n)
    return ModelError(f"{graph}: fullgraph=True, but aten.{op_name(n.target)} (fx node {n.name!r}"
                      f"{' at ' + src if src else ''}) is outside sparsec's IR op set")


class SpecializedFx:
    """An aot_autograd graph: static per input shape, partitioned, cached by shape."""

    def __init__(self, gm: fx.GraphModule, opts: Options, statics: Statics, name: str,
                 static_positions: set[int] | None = None):
        self.gm, self.opts, self.statics, self.name = gm, opts, statics, name
        self.symbolic = _is_symbolic(gm)
        self.cache: dict[tuple, Callable] = {}
        self.logged = False
        if opts.fullgraph and static_positions is not None:
            phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
            const = constant_nodes(gm, {n.name for i, n in enumerate(phs) if i in static_positions})
            for n in gm.graph.nodes:
                if not node_supported(n, const):
                    raise unsupported_error(n, name)

    def __call__(self, *args):
        key = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in args)
        fn = self.cache.get(key)
        if fn is None:
            fn = self.cache[key] = self._specialize(args)
        return fn(*args)

    def _specialize(self, args) -> Callable:
        gm, tensors = self.gm, list(args)
        pick = None
        if self.symbolic:     # a static graph for these shapes: sizes (SymInt inputs) become constants
            from torch.fx.experimental.proxy_tensor import make_fx

            pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
            fixed = list(args)

            def static_fn(*ts):
                full = list(fixed)
                for i, t in zip(pos, ts):
                    full[i] = t
                return self.gm(*full)

            tensors = [args[i] for i in pos]
            gm = make_fx(static_fn, tracing_mode="real")(*tensors)

            def pick(a):
                return [a[i] for i in pos]
        static = {n.name for n, a in zip((n for n in gm.graph.nodes if n.op == "placeholder"), tensors)
                  if a in self.statics}
        part = Partitioned(gm, self.opts, self.statics, self.name, constant_nodes(gm, static),
                           log_summary=not self.logged)
        self.logged = True
        return part if pick is None else (lambda *a: part(*pick(a)))


class Partitioned:
    """A static ATen graph: supported subgraphs become ``CompiledFx``; the other nodes run eagerly.

    Unsupported = op outside the lowering table, or a node whose lowering rule
    refused it (found at the first call, when real values are known); after such
    a refusal the graph is partitioned again without that node.
    """

    def __init__(self, gm: fx.GraphModule, opts: Options, statics: Statics, name: str,
                 constant: set[fx.Node] = frozenset(), log_summary: bool = True):
        self.src, self.opts, self.statics, self.name = gm, opts, statics, name
        self.constant = constant
        self.refused: set[str] = set()
        self.log_summary = log_summary
        self.summary: Summary | None = None
        self._build()

    def _build(self) -> None:
        from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
        from torch.fx.passes.operator_support import OperatorSupportBase

        refused, const = self.refused, self.constant
        calls = [n for n in self.src.graph.nodes if n.op == "call_function"]
        bad = [n for n in calls if not node_supported(n, const) or n.name in refused]
        if not bad:
            self.parts = None
            self.whole = CompiledFx(self.src, self.opts, self.statics, self.name)
            self.summary = Summary(self.name, len(calls), 0, {}, 1)
            return
        if self.opts.fullgraph:
            raise unsupported_error(bad[0], self.name)

        gm = fx.GraphModule(self.src, copy.deepcopy(self.src.graph))
        ok = {n.name for n in calls if n not in bad}

        class Support(OperatorSupportBase):
            def is_node_supported(self, submodules, node):
                return node.op == "call_function" and node.name in ok

        parts = CapabilityBasedPartitioner(gm, Support(), allows_single_node_partition=True).propose_partitions()
        self.whole = None
        self.parts = {}
        fused = fuse(gm, parts)
        for n in fused.graph.nodes:
            if n.op == "call_module" and n.target.startswith("fused_"):
                sub = getattr(fused, n.target)
                cf = CompiledFx(sub, self.opts, self.statics, f"{self.name}.{n.target}")
                self.parts[n.target] = (cf, {x.name for x in sub.graph.nodes})
                setattr(fused, n.target, _Call(cf))
        self.gm = fused
        ops: dict[str, int] = {}
        for n in bad:
            k = op_name(n.target)
            ops[k] = ops.get(k, 0) + 1
        self.summary = Summary(self.name, len(calls) - len(bad), len(bad), ops, len(self.parts))

    def _emit_summary(self) -> None:
        if self.log_summary:
            SUMMARIES.append(self.summary)
            (log.warning if self.summary.fallback_nodes else log.info)("%s", self.summary)
            self.log_summary = False

    def __call__(self, *args):
        while True:
            try:
                out = self.whole(*args) if self.parts is None else self.gm(*args)
                break
            except LoweringFailed as exc:
                if self.opts.fullgraph or exc.node is None or exc.node in self.refused:
                    raise ModelError(str(exc)) from None
                self.refused.add(exc.node)
                self._build()
        self._emit_summary()
        return out


class _Call(torch.nn.Module):
    def __init__(self, fn: CompiledFx):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def fuse(gm: fx.GraphModule, partitions) -> fx.GraphModule:
    from torch.fx.passes.utils.fuser_utils import fuse_by_partitions

    return fuse_by_partitions(gm, [{n: None for n in p.nodes} for p in partitions], prefix="fused_")
