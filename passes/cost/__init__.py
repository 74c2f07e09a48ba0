"""Cost models: predicted kernel time per (format, shape, tokens, target)."""
from sparsec.passes.cost.model import CostModel, Features, Stats, features  # noqa: F401
from sparsec.passes.cost.targets import TARGETS, TargetDesc, host_desc  # noqa: F401
