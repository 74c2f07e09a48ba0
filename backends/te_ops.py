"""Per-op TE lowering and CPU schedules; the implementation lives in ``sparsec.backends.te``."""
from sparsec.backends.te import (  # noqa: F401
    TE_RULES, GraphFuncs, NodeFuncCache, ScalarConst, build_node_func, func_key, lower_graph,
    lower_node, scalar_consts, schedule_cpu,
)
