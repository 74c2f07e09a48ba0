"""PrimFuncs for IR nodes, and a cache that shares one PrimFunc among identical nodes.

A node's PrimFunc takes its non-scalar inputs in node order (each a buffer of
the IR input's shape and dtype), then the output buffer; 0-d constant inputs
given as ``ScalarConst`` are inlined and take no parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import tvm
from tvm import te

from sparsec.ir.errors import ModelError
from sparsec.ir.graph import Graph, Node
from sparsec.ir.types import TensorType
from sparsec.backends.te.rules import ScalarConst, lower_node
from sparsec.backends.te.schedule import schedule_cpu

ScalarMap = Mapping["int | str", "ScalarConst | float | int | bool"]


def _resolve_scalars(node: Node, input_types: Sequence[TensorType],
                     const_scalars: ScalarMap | None) -> list[ScalarConst | None]:
    """Per input position: the inlined scalar, or None for a buffer parameter."""
    if len(input_types) != len(node.inputs):
        raise ModelError(f"{node.where()}: {len(input_types)} input types for {len(node.inputs)} inputs")
    out: list[ScalarConst | None] = []
    for k, (name, t) in enumerate(zip(node.inputs, input_types)):
        sc = None
        if const_scalars:
            sc = const_scalars.get(k, const_scalars.get(name))
        if sc is not None:
            if t.shape != ():
                raise ModelError(f"{node.where()}: input {k} (%{name}) of type {t} given as an inlined scalar")
            if not isinstance(sc, ScalarConst):
                sc = ScalarConst(sc, t.dtype)
            if sc.dtype != t.dtype:
                raise ModelError(f"{node.where()}: scalar for input {k} (%{name}) is {sc.dtype}, IR says {t.dtype}")
        out.append(sc)
    return out


def build_node_func(node: Node, input_types: Sequence[TensorType], const_scalars: ScalarMap | None = None,
                    global_symbol: str | None = None) -> tvm.tirx.PrimFunc:
    """The unscheduled PrimFunc of ``node`` (``const_scalars``: input position or name -> scalar)."""
    scalars = _resolve_scalars(node, input_types, const_scalars)
    args: list = []
    params: list[te.Tensor] = []
    for k, (t, sc) in enumerate(zip(input_types, scalars)):
        if sc is not None:
            args.append(sc)
        else:
            ph = te.placeholder(tuple(t.shape), t.dtype, name=f"in{k}")
            args.append(ph)
            params.append(ph)
    out = lower_node(node, args, node.type)
    symbol = global_symbol or "".join(ch if ch.isalnum() else "_" for ch in node.name)
    func = te.create_prim_func([*params, out])
    return func.with_attr("global_symbol", symbol)


def func_key(node: Node, input_types: Sequence[TensorType], const_scalars: ScalarMap | None = None) -> tuple:
    """What a node's PrimFunc depends on: op, attributes, input types and inlined scalar values."""
    scalars = _resolve_scalars(node, input_types, const_scalars)
    ins = tuple(("scalar", sc.dtype, type(sc.value).__name__, repr(sc.value)) if sc is not None
                else (t.shape, t.dtype) for t, sc in zip(input_types, scalars))
    return (node.op.value, node.attrs, ins, (node.type.shape, node.type.dtype))


def scalar_consts(graph: Graph) -> dict[str, ScalarConst]:
    """The graph's 0-d dense constants as inlinable scalars, by name."""
    out = {}
    for c in graph.constants:
        if c.type.shape == () and c.format == "dense":
            out[c.name] = ScalarConst(c.dense().item(), c.type.dtype)
    return out


@dataclass
class NodeFuncCache:
    """Scheduled PrimFuncs by ``func_key``: identical nodes share one function (and one symbol)."""

    target: object = None
    schedule: bool = True
    prefix: str = "te"
    funcs: dict[str, tvm.tirx.PrimFunc] = field(default_factory=dict)
    _by_key: dict[tuple, str] = field(default_factory=dict)
    hits: int = 0

    def get(self, node: Node, input_types: Sequence[TensorType],
            const_scalars: ScalarMap | None = None) -> tuple[str, tvm.tirx.PrimFunc]:
        key = func_key(node, input_types, const_scalars)
        sym = self._by_key.get(key)
        if sym is not None:
            self.hits += 1
            return sym, self.funcs[sym]
        sym = f"{self.prefix}_{node.op.value}_{len(self.funcs)}"
        func = build_node_func(node, input_types, const_scalars, sym)
        if self.schedule:
            func = schedule_cpu(func, self.target).with_attr("global_symbol", sym)
        self._by_key[key] = sym
        self.funcs[sym] = func
        return sym, func

    def module(self) -> tvm.IRModule:
        return tvm.IRModule(dict(self.funcs))


@dataclass
class GraphFuncs:
    """``funcs``: symbol -> PrimFunc (distinct ones); ``node_symbol``: node name -> symbol;
    ``scalars``: the 0-d constants that were inlined (they need no buffer at run time)."""

    funcs: dict[str, tvm.tirx.PrimFunc]
    node_symbol: dict[str, str]
    scalars: dict[str, ScalarConst]

    def module(self) -> tvm.IRModule:
        return tvm.IRModule(dict(self.funcs))


def lower_graph(graph: Graph, target=None, nodes: Iterable[Node] | None = None,
                cache: NodeFuncCache | None = None) -> GraphFuncs:
    """Scheduled PrimFuncs for ``nodes`` (default: all) of ``graph``, deduplicated by ``func_key``."""
    cache = cache if cache is not None else NodeFuncCache(target)
    types = graph.types()
    scalars = scalar_consts(graph)
    node_symbol: dict[str, str] = {}
    used: dict[str, tvm.tirx.PrimFunc] = {}
    for n in (graph.nodes if nodes is None else nodes):
        sym, func = cache.get(n, [types[i] for i in n.inputs], scalars)
        node_symbol[n.name] = sym
        used[sym] = func
    return GraphFuncs(used, node_symbol, scalars)
