"""`sparsec simulate sat|piuma`: the simulators' own CLIs, one sub-parser each.

Each simulator package exposes ``cli.register(subparsers)`` (in
``sparsec.sim.<name>.cli``); this module only gathers them.
"""
from __future__ import annotations

import importlib

SIMULATORS = ["sat", "piuma"]


def register(sub) -> None:
    parser = sub.add_parser("simulate", help="run a cycle-level accelerator simulator",
                            description="Cycle-level simulators: SAT (N:M sparse training, BDWP) "
                                        "and PIUMA-style SpGEMM.")
    sims = parser.add_subparsers(dest="simulator", metavar="SIMULATOR", required=True)
    for name in SIMULATORS:
        modname = f"sparsec.sim.{name}.cli"
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name in (modname, f"sparsec.sim.{name}"):
                continue
            raise
        module.register(sims)
