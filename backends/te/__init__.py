"""Every IR op lowered to TVM TE/TIR with rule-based CPU schedules (see docs/te_ops.md).

- ``lower_node(node, inputs, out_type) -> te.Tensor``: one node as TE, from
  placeholders or inlined 0-d ``ScalarConst`` inputs (``TE_RULES``: one rule per op);
- ``build_node_func(node, input_types, const_scalars, global_symbol) -> PrimFunc``;
- ``schedule_cpu(func, target) -> PrimFunc``;
- ``NodeFuncCache`` / ``lower_graph``: one scheduled PrimFunc per distinct
  (op, attrs, input types, inlined scalars), shared by every node that has it.
"""
from sparsec.backends.te.build import (  # noqa: F401
    GraphFuncs, NodeFuncCache, build_node_func, func_key, lower_graph, scalar_consts,
)
from sparsec.backends.te.rules import TE_RULES, ScalarConst, lower_node  # noqa: F401
from sparsec.backends.te.schedule import schedule_cpu  # noqa: F401
