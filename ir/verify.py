"""The IR verifier: run between passes in tests and debug mode.

Checks SSA (every name defined once, before use), that every op is in the
closed set with the right arity and complete attributes, that every node's
recorded type equals the inferred one, that constants are valid formats, and
that the outputs are defined. The error names the node, and when called from a
pass pipeline, the pass that broke the graph and the ones before it.
"""
from __future__ import annotations

from typing import Sequence

from sparsec.ir.errors import ModelError
from sparsec.ir.errors import FormatError
from sparsec.ir.graph import Graph
from sparsec.ir.ops import OPS, Op, full_attrs, infer_type


class VerifyError(ModelError):
    """The graph breaks an IR invariant."""


def verify(g: Graph, after_pass: str | None = None, passes_before: Sequence[str] = (),
           check_data: bool = False) -> None:
    ctx = ""
    if after_pass:
        ctx = f" after pass {after_pass!r}" + (f" (passes before: {', '.join(passes_before)})" if passes_before else "")

    def fail(msg: str):
        raise VerifyError(f"verifier{ctx}: {msg}")

    types = {}
    for v in g.inputs:
        if v.name in types:
            fail(f"input %{v.name} defined twice")
        types[v.name] = v.type
    for c in g.constants:
        if c.name in types:
            fail(f"constant %{c.name} redefines a name")
        if check_data:
            try:
                c.value.validate()
            except FormatError as exc:
                fail(f"constant %{c.name}: {exc}")
        types[c.name] = c.type
    for n in g.nodes:
        where = n.where()
        if n.name in types:
            fail(f"{where}: redefines %{n.name}")
        if not isinstance(n.op, Op) or n.op not in OPS:
            fail(f"{where}: op {n.op!r} is not in the IR op set")
        for i in n.inputs:
            if i not in types:
                fail(f"{where}: input %{i} is not defined before use (dangling input)")
        try:
            attrs = full_attrs(n.op, dict(n.attrs))
            if attrs != dict(n.attrs):
                fail(f"{where}: attributes {dict(n.attrs)} are incomplete (expected keys {sorted(attrs)})")
            t = infer_type(n.op, [types[i] for i in n.inputs], attrs)
        except ModelError as exc:
            fail(f"{where}: {exc}")
        if t != n.type:
            what = "dtype" if t.shape == n.type.shape else "shape"
            fail(f"{where}: {what} mismatch: recorded {n.type}, inferred {t}")
        types[n.name] = n.type
    if not g.outputs:
        fail("graph has no outputs")
    for o in g.outputs:
        if o not in types:
            fail(f"output %{o} is not defined")
