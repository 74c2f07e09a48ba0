"""Epilogue fusion: ``act(linear(x, W, b))`` -> ``linear(x, W, b) {activation=act}``.

Applies when the activation (relu, exact gelu, silu) is the linear's only
user and the linear has no epilogue yet; the kernel families compute it in
registers instead of a second pass over the output.
"""
from __future__ import annotations

import dataclasses

from sparsec.ir.graph import Graph, make_node
from sparsec.ir.ops import Op

FUSIBLE = {Op.RELU: "relu", Op.SILU: "silu", Op.GELU: "gelu"}


def fuse_epilogues(g: Graph) -> Graph:
    users = g.users()
    producers = {n.name: n for n in g.nodes}
    types = g.types()
    fused: dict[str, str] = {}          # activation node -> linear node that absorbs it
    for n in g.nodes:
        if n.op not in FUSIBLE or (n.op == Op.GELU and n.attr["approximate"] != "none"):
            continue
        p = producers.get(n.inputs[0])
        if (p is not None and p.op == Op.LINEAR and p.attr["activation"] is None
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
