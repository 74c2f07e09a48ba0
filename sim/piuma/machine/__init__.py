"""The PIUMA-style machine, one module per hardware part.

Every shared part is an FCFS *reservation* resource: a request for ``n`` units
at time ``t`` starts at ``max(t, free)`` and ends ``n / rate`` later. A thread's
task (a burst of loads, stores, atomics and compute) ends when its own
latency-bound chain is done and every resource it reserved has served it.
"""
from sparsec.sim.piuma.machine.machine import Machine

__all__ = ["Machine"]
