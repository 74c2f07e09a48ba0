"""SAT: cycle-level simulator of the N:M sparse training accelerator with the BDWP dataflow.

Hardware parts live in their own modules (``config``, ``pe_array``,
``buffers``, ``dram``, ``dataflow/``), the models at three levels share one
step schedule (``schedule``, ``pipeline``): ``functional`` (FL, the numbers),
``cycle`` (CL, data moved cycle by cycle) and ``fast`` (closed form per step).
See docs/sat.md.
"""
from sparsec.sim.sat.config import SatConfig, load_config, scalesim_config  # noqa: F401
from sparsec.sim.sat.pipeline import Opts  # noqa: F401
from sparsec.sim.sat.simulator import compare, simulate  # noqa: F401
from sparsec.sim.sat.workloads import Layer, builtin  # noqa: F401
