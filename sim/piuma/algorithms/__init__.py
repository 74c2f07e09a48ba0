"""SpGEMM algorithms as programs for the PIUMA machine, picked from a registry.

Each module registers one class with ``@register``; ``ALGORITHMS[name]().plan(
operands, config, machine)`` returns a :class:`~.base.Plan` (the product C and
the stages of tasks the engine times).
"""
from __future__ import annotations

from sparsec.sim.piuma.algorithms.registry import ALGORITHMS, register  # noqa: F401
from sparsec.sim.piuma.algorithms import inner, outer, rowwise, smash  # noqa: F401,E402

__all__ = ["ALGORITHMS", "register"]
