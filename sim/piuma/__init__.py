"""PIUMA-style SpGEMM simulator: inner, outer, row-wise and SMASH atomic hashing.

``simulate(A, B, algo, config)`` runs one algorithm on the machine model and
returns a :class:`~sparsec.sim.piuma.report.SimResult` holding the product C
(equal to ``A @ B``), cycles and the machine counters. See docs/piuma.md.
"""
from sparsec.sim.piuma.config import PiumaConfig, load_config
from sparsec.sim.piuma.engine import simulate, simulate_all
from sparsec.sim.piuma.algorithms import ALGORITHMS

__all__ = ["PiumaConfig", "load_config", "simulate", "simulate_all", "ALGORITHMS"]
