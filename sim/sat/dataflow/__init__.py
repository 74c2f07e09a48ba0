"""Dataflows (array mappings) of the SAT PE array, one module each, in a registry.

A dataflow assigns the three GEMM dimensions of ``Out[M, N] = A[M, K] · B[K, N]``
to the array's rows, its columns and time (``roles``), gives the stall-free
cycles of one fold (``fold_cycles``, vectorised), and moves the data of one
fold through the PE grid cycle by cycle (``simulate_fold``, the CL model).

The sparse operand is always B, N:M-compressed along K (see
``sparsec.passes.bdwp.compress``); its partner carries the M-wide group
window into each PE's selection unit (``pe_array.select``).
"""
from __future__ import annotations

from sparsec.sim.sat.dataflow.input_stationary import InputStationary
from sparsec.sim.sat.dataflow.output_stationary import OutputStationary
from sparsec.sim.sat.dataflow.weight_stationary import WeightStationary

DATAFLOWS = {d.name: d for d in (WeightStationary(), OutputStationary(), InputStationary())}


def get(name: str):
    from sparsec.ir.errors import ConfigError
    try:
        return DATAFLOWS[name]
    except KeyError:
        raise ConfigError(f"unknown dataflow {name!r}; expected one of {', '.join(DATAFLOWS)}") from None
