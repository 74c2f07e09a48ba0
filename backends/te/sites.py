"""Tunable non-matmul functions of a compiled graph ("sites") and their reference semantics.

``compile_graph`` describes every TE-lowered function (a node with the
injective producers fused into it) and every layout transpose it builds as a
``TeSite`` and asks its ``te_knobs_for(site)`` hook for schedule knobs
(``TE_KNOBS`` of ``backends/te/schedule.py``; ``TRANSPOSE_KNOBS`` for
transposes); ``None`` means the rule-based schedule.

A site carries what an autotuner needs to measure it in another process:

- ``key``: a digest of the function's structural description (op, attributes,
  fused producers, input/output shapes and dtypes, inlined scalars): equal
  keys build the same function;
- ``func_json``: the unscheduled PrimFunc (``tvm.ir.save_json``) for ``te``
  sites, or ``(rows, cols, dtype)`` for transposes;
- ``expr``: the computation as a tree over the inputs -- ``("node", op, attr,
  children)``, ``("in", k)``, ``("scalar", value, dtype)``, ``("transpose",)``
  -- evaluated by ``reference`` with the IR's torch semantics
  (``sparsec.ir.ops.evaluate``), independently of the TVM lowering.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

FLOATS = ("float32", "float64", "float16", "bfloat16")
INTS = ("int64", "int32", "int16", "int8", "uint8")


@dataclass
class TeSite:
    kind: str                       # "te" | "transpose"
    key: str
    op: str
    inputs: list                    # [(shape, dtype)] per buffer parameter, in order
    output: tuple                   # (shape, dtype)
    expr: tuple
    doc: str
    func_json: object = None        # te: save_json(unscheduled PrimFunc); transpose: (rows, cols, dtype)
    count: int = 1                  # steps of the graph that call it (filled by collectors)
    extra: dict = field(default_factory=dict)

    @property
    def tunable(self) -> bool:
        """Float, bool and integer inputs (integers drawn from {0, 1}: valid indices of any table
        with two rows or more, e.g. an embedding lookup's); nothing else is generated."""
        return all(dt in FLOATS or dt in INTS or dt == "bool" for _, dt in self.inputs)


def site_key(desc) -> str:
    return hashlib.sha1(repr(("te-site-v1", desc)).encode()).hexdigest()[:20]


def random_inputs(site: TeSite, seed: int = 0) -> list[torch.Tensor]:
    """Floats in [0.5, 1.5) (positive: sqrt/log/div stay finite), random bools for masks,
    integers in {0, 1} (indices valid in any table of two rows or more)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, dt in site.inputs:
        if dt == "bool":
            out.append(torch.rand(tuple(shape), generator=g) < 0.5)
        elif dt in INTS:
            out.append(torch.randint(0, 2, tuple(shape), generator=g).to(getattr(torch, dt)))
        else:
            out.append((torch.rand(tuple(shape), generator=g) + 0.5).to(getattr(torch, dt)))
    return out


def reference(site: TeSite, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The site's output computed in float64 (float inputs) with the IR's torch semantics."""
    from sparsec.ir.ops import Op, evaluate

    xs = [x.double() if x.is_floating_point() else x for x in inputs]

    def ev(e):
        tag = e[0]
        if tag == "in":
            return xs[e[1]]
        if tag == "scalar":
            v, dt = e[1], e[2]
            return torch.tensor(v, dtype=torch.float64 if dt in FLOATS else getattr(torch, dt))
        if tag == "transpose":
            return xs[0].t()
        _, op, attr, children = e
        return evaluate(Op(op), [ev(c) for c in children], dict(attr))

    with torch.no_grad():
        return ev(site.expr)
