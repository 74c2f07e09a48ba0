"""The IR: a small typed SSA graph of frozen values.

A ``Graph`` has inputs (``Value``), constants (``Constant``: a name and a
format object from ``sparsec.ir.formats`` — ``Dense`` until a pass packs a
weight), nodes (``Node``: an op of the closed set in ``sparsec.ir.ops``, input
names, attributes, the output type) and output names. Every name is defined
once; nodes are in topological order. Passes are pure ``Graph -> Graph``
functions: they return new graphs and never mutate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import torch

from sparsec.ir.errors import ModelError
from sparsec.ir.formats import Dense, SparseFormat, dtype_name
from sparsec.ir.ops import WEIGHT_OPERAND, Op, full_attrs, infer_type
from sparsec.ir.types import TensorType


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, torch.dtype):
        return dtype_name(v)
    return v


@dataclass(frozen=True)
class Value:
    """A graph input: a name and its type."""

    name: str
    type: TensorType


@dataclass(frozen=True, eq=False)
class Constant:
    """A named constant tensor (a weight, a buffer, a folded scalar) in some format."""

    name: str
    value: SparseFormat

    @property
    def type(self) -> TensorType:
        return TensorType(tuple(self.value.shape), self.value.dtype_name)

    @property
    def format(self) -> str:
        return self.value.name

    def dense(self) -> torch.Tensor:
        return self.value.to_dense()

    def __eq__(self, other) -> bool:
        return isinstance(other, Constant) and self.name == other.name and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.name, self.value.name, self.value.shape))


@dataclass(frozen=True)
class Node:
    """``name = op(inputs...) {attrs}`` with its output type.

    ``attrs`` is a sorted tuple of (key, value) pairs with every default filled in;
    ``source`` says where the node came from (fx node, user source line) for errors.
    """

    name: str
    op: Op
    inputs: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...]
    type: TensorType
    source: str = field(default="", compare=False)

    @property
    def attr(self) -> dict[str, Any]:
        return dict(self.attrs)

    def where(self) -> str:
        return f"node %{self.name} ({self.op.value}{', ' + self.source if self.source else ''})"


@dataclass(frozen=True)
class Graph:
    inputs: tuple[Value, ...]
    constants: tuple[Constant, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    name: str = "main"

    # -- lookups ---------------------------------------------------------------
    def types(self) -> dict[str, TensorType]:
        t = {v.name: v.type for v in self.inputs}
        t.update({c.name: c.type for c in self.constants})
        t.update({n.name: n.type for n in self.nodes})
        return t

    def constant(self, name: str) -> Constant:
        for c in self.constants:
            if c.name == name:
                return c
        raise KeyError(name)

    def constant_map(self) -> dict[str, Constant]:
        return {c.name: c for c in self.constants}

    def users(self) -> dict[str, list[Node]]:
        u: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                u.setdefault(i, []).append(n)
        return u

    def op_counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for n in self.nodes:
            c[n.op.value] = c.get(n.op.value, 0) + 1
        return dict(sorted(c.items()))

    def weights(self) -> list[tuple[Node, Constant]]:
        """(node, constant) for every matmul-class node whose weight operand is a constant."""
        consts = self.constant_map()
        out = []
        for n in self.nodes:
            k = WEIGHT_OPERAND.get(n.op)
            if k is not None and k < len(n.inputs) and n.inputs[k] in consts:
                out.append((n, consts[n.inputs[k]]))
        return out

    # -- functional updates ------------------------------------------------------
    def with_constant(self, name: str, value: SparseFormat) -> "Graph":
        """A new graph whose constant ``name`` holds ``value`` (same logical shape and dtype)."""
        old = self.constant(name)
        if tuple(value.shape) != tuple(old.value.shape) or value.dtype != old.value.dtype:
            raise ModelError(f"constant %{name}: replacement {value.name} {value.shape} {value.dtype} does not "
                             f"match {old.value.shape} {old.value.dtype}")
        return replace(self, constants=tuple(Constant(c.name, value) if c.name == name else c
                                             for c in self.constants))

    def with_nodes(self, nodes: Iterable[Node], outputs: Iterable[str] | None = None) -> "Graph":
        return replace(self, nodes=tuple(nodes), outputs=tuple(outputs) if outputs is not None else self.outputs)


def make_node(name: str, op: Op | str, inputs: Iterable[str], attrs: dict, types: dict[str, TensorType],
              source: str = "") -> Node:
    """A node with defaults filled in and its type inferred from ``types`` of the inputs."""
    op = Op(op)
    inputs = tuple(inputs)
    where = f"node %{name}{' (' + source + ')' if source else ''}: "
    for i in inputs:
        if i not in types:
            raise ModelError(f"{where}{op.value}: input %{i} is not defined")
    attrs = {k: _freeze(v) for k, v in full_attrs(op, dict(attrs), where).items()}
    t = infer_type(op, [types[i] for i in inputs], attrs, where)
    return Node(name, op, inputs, tuple(sorted(attrs.items())), t, source)


class GraphBuilder:
    """Builds a graph node by node, inferring types as it goes."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.constants: list[Constant] = []
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = {}
        self._used: set[str] = set()

    def fresh(self, hint: str) -> str:
        base = "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in hint) or "v"
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def input(self, hint: str, type_: TensorType) -> str:
        name = self.fresh(hint)
        self.inputs.append(Value(name, type_))
        self.types[name] = type_
        return name

    def constant(self, hint: str, value: SparseFormat | torch.Tensor) -> str:
        if isinstance(value, torch.Tensor):
            value = Dense.from_dense(value)
        name = self.fresh(hint)
        c = Constant(name, value)
        self.constants.append(c)
        self.types[name] = c.type
        return name

    def node(self, op: Op | str, inputs: Iterable[str], attrs: dict | None = None, hint: str | None = None,
             source: str = "") -> str:
        op = Op(op)
        name = self.fresh(hint or op.value)
        n = make_node(name, op, inputs, attrs or {}, self.types, source)
        self.nodes.append(n)
        self.types[name] = n.type
        return name

    def build(self, outputs: Iterable[str]) -> Graph:
        return Graph(tuple(self.inputs), tuple(self.constants), tuple(self.nodes), tuple(outputs), self.name)


def param_count(g: Graph) -> int:
    return sum(math.prod(c.value.shape) for c in g.constants)
