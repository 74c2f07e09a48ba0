"""Canonical matmul form: every matmul with a constant 2-D weight becomes ``linear``.

``mm(x, W)``, ``matmul(x, W)`` and ``addmm(b, x, W)`` (beta = alpha = 1, 1-D b)
with a constant ``W[K, O]`` are rewritten to ``linear(x, Wᵀ[O, K], b)``, the
form every kernel family and the format passes use (weights ``[out, in]``, the
reduction dimension last). GPT-2's Conv1D layers and aot_autograd's
``addmm(b, x, t(W))`` land here. A transposed constant is stored once.
"""
from __future__ import annotations

import dataclasses

from sparsec.ir.formats import Dense
from sparsec.ir.graph import Constant, Graph, make_node
from sparsec.ir.ops import Op


def canonicalize_matmul(g: Graph) -> Graph:
    consts = g.constant_map()
    new_consts = list(g.constants)
    transposed: dict[str, str] = {}
    nodes = []
    types = {v.name: v.type for v in g.inputs} | {c.name: c.type for c in g.constants}
    names = set(types) | {n.name for n in g.nodes}

    def transposed_const(name: str) -> str:
        if name not in transposed:
            t = name + ".T"
            while t in names:
                t += "_"
            names.add(t)
            c = Constant(t, Dense.from_dense(consts[name].dense().t().contiguous()))
            new_consts.append(c)
            types[t] = c.type
            transposed[name] = t
        return transposed[name]

    for n in g.nodes:
        rewritten = None
        if n.op in (Op.MM, Op.MATMUL, Op.ADDMM):
            x, w = (n.inputs[1], n.inputs[2]) if n.op == Op.ADDMM else n.inputs
            a = n.attr
            ok = w in consts and len(consts[w].value.shape) == 2 and len(types[x].shape) >= 1
            if n.op == Op.MM or n.op == Op.MATMUL:
                ok = ok and len(types[x].shape) >= 2 if n.op == Op.MM else ok and len(types[x].shape) >= 1
            if n.op == Op.ADDMM:
                b = n.inputs[0]
                ok = ok and a["beta"] == 1 and a["alpha"] == 1 and len(types[b].shape) == 1
            if ok:
                ins = [x, transposed_const(w)] + ([n.inputs[0]] if n.op == Op.ADDMM else [])
                rewritten = make_node(n.name, Op.LINEAR, ins, {}, types, n.source)
                if rewritten.type != n.type:      # e.g. a 1-D bias that broadcasts differently
                    rewritten = None
        node = rewritten or n
        types[node.name] = node.type
        nodes.append(node)
    used = {i for n in nodes for i in n.inputs} | set(g.outputs)
    new_consts = [c for c in new_consts if c.name in used]
    return dataclasses.replace(g, constants=tuple(new_consts), nodes=tuple(nodes))
