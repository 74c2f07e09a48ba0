"""Epilogue fusion into ``linear``: the activation, then a residual add.

1. ``act(linear(x, W, b))`` -> ``linear(x, W, b) {activation=act}`` when the
   activation (relu, exact gelu, silu) is the linear's only user and the linear
   has no epilogue yet.
2. ``add(linear(...), r)`` (either operand order, ``alpha=1``) ->
   ``linear(x, W, b, r) {residual=true}`` when the add is the linear's only
   user, ``r`` has the linear's exact shape and dtype (no broadcast, no type
   promotion) and the linear has no residual yet. Runs after 1, so
   ``Y = act(X Wᵀ + b) + R`` becomes one node.

The fused node takes the name of the node it replaces last (the activation or
the add) and its position, so its users need no rewiring and every operand is
defined before it. The kernel families compute the epilogue in registers
instead of extra passes over the output. ``residual=False`` leaves adds alone,
for a backend whose kernels cannot take the residual operand (none of the
graph-compiling targets today: llvm and arm share the kernel families and
their common epilogue).
"""
from __future__ import annotations

import dataclasses

from sparsec.ir.graph import Graph, make_node
from sparsec.ir.ops import Op

FUSIBLE = {Op.RELU: "relu", Op.SILU: "silu", Op.GELU: "gelu"}


def fuse_epilogues(g: Graph, residual: bool = True) -> Graph:
    g = fuse_activations(g)
    return fuse_residual_adds(g) if residual else g


def fuse_activations(g: Graph) -> Graph:
    users = g.users()
    producers = {n.name: n for n in g.nodes}
    types = g.types()
    fused: dict[str, str] = {}          # activation node -> linear node that absorbs it
    for n in g.nodes:
        if n.op not in FUSIBLE or (n.op == Op.GELU and n.attr["approximate"] != "none"):
            continue
        p = producers.get(n.inputs[0])
        if (p is not None and p.op == Op.LINEAR and p.attr["activation"] is None and not p.attr["residual"]
                and len(users.get(p.name, [])) == 1 and p.name not in g.outputs):
            fused[n.name] = p.name
    if not fused:
        return g
    by_linear = {v: k for k, v in fused.items()}
    nodes = []
    for n in g.nodes:
        if n.name in fused:
            continue
        if n.name in by_linear:
            act = producers[by_linear[n.name]]
            # the fused node takes the activation's name, so its users need no rewiring
            nn = make_node(act.name, Op.LINEAR, n.inputs, {**n.attr, "activation": FUSIBLE[act.op]}, types,
                           n.source)
            nodes.append(nn)
            continue
        nodes.append(n)
    return dataclasses.replace(g, nodes=tuple(nodes))


def residual_operand(n, producers, users, types, outputs, consts) -> tuple[str, str] | None:
    """``(linear, residual)`` if ``add`` node ``n`` can be fused into its linear operand, else None.

    The residual must be a computed value (a full-size constant addend is left to the add)."""
    if n.op != Op.ADD or n.attr["alpha"] != 1 or n.inputs[0] == n.inputs[1]:
        return None
    for a, r in ((n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])):
        p = producers.get(a)
        if (p is not None and r not in consts and p.op == Op.LINEAR and not p.attr["residual"] and a not in outputs
                and [u.name for u in users.get(a, [])] == [n.name] and types[r] == types[a] == n.type):
            return a, r
    return None


def fuse_residual_adds(g: Graph) -> Graph:
    users = g.users()
    producers = {n.name: n for n in g.nodes}
    types = g.types()
    outputs = set(g.outputs)
    consts = g.constant_map()
    fused: dict[str, tuple[str, str]] = {}      # add node -> (linear, residual)
    for n in g.nodes:
        hit = residual_operand(n, producers, users, types, outputs, consts)
        if hit is not None:
            fused[n.name] = hit
    if not fused:
        return g
    absorbed = {lin for lin, _ in fused.values()}
    nodes = []
    for n in g.nodes:
        if n.name in absorbed:
            continue
        if n.name in fused:
            lin, r = fused[n.name]
            p = producers[lin]
            # at the add's position, under its name: the residual and the linear's operands are all defined
            nodes.append(make_node(n.name, Op.LINEAR, [*p.inputs, r], {**p.attr, "residual": True}, types,
                                   p.source or n.source))
            continue
        nodes.append(n)
    return dataclasses.replace(g, nodes=tuple(nodes))
