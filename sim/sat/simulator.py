"""The SAT simulator's Python API: one training step, sparse vs dense."""
from __future__ import annotations

from dataclasses import dataclass, field

from sparsec.ir.errors import ParameterError
from sparsec.passes.bdwp import DENSE, NM, parse_nm
from sparsec.sim.sat import fast, report
from sparsec.sim.sat.pipeline import Opts, build_sequence
from sparsec.sim.sat.workloads import Layer, training_gemms


@dataclass
class Result:
    pattern: str
    opts: str
    batch: int
    rows: list
    totals: dict
    sequence: object = field(repr=False, default=None)
    timeline: object = field(repr=False, default=None)


def _check_pattern(p: NM, cfg):
    if not p.dense and p.m > cfg.array.max_m:
        raise ParameterError(f"pattern {p}: M = {p.m} exceeds the selection window [array] max_m = {cfg.array.max_m}")
    if not p.dense and p.n > min(cfg.array.rows, cfg.array.cols):
        raise ParameterError(f"pattern {p}: N = {p.n} exceeds the array ([array] rows/cols)")


def simulate(layers: list[Layer], cfg, pattern="2:8", batch: int = 32, opts: Opts | str = Opts(),
             progress=None) -> Result:
    """Simulate one training step (FF, BP, WU of every layer) of ``layers`` on SAT."""
    p = parse_nm(pattern)
    _check_pattern(p, cfg)
    o = Opts.parse(opts) if isinstance(opts, str) else opts
    per_layer = training_gemms(layers, batch, p)
    seq = build_sequence(per_layer, cfg, o, progress)
    tl = fast.evaluate(seq)
    rows = report.phase_stats(seq, tl)
    return Result(str(p), str(o), batch, rows, report.totals(rows, tl.total, cfg), seq, tl)


def compare(layers: list[Layer], cfg, pattern="2:8", batch: int = 32, opts: Opts | str = Opts(),
            progress=None) -> dict:
    """Sparse (BDWP) and dense training steps on the same SAT, their speedup and the bound."""
    p = parse_nm(pattern)
    if p.dense:
        raise ParameterError("compare needs an N:M pattern (dense is the baseline)")
    sp = simulate(layers, cfg, p, batch, opts, progress)
    de = simulate(layers, cfg, DENSE, batch, opts, progress)
    return {"sparse": sp, "dense": de,
            "speedup": de.totals["cycles"] / sp.totals["cycles"],
            "bound": report.bound(p.n, p.m),
            # Ratio of executed MACs: the bound of this workload exactly (it exceeds the formula's
            # when phases' MACs differ, e.g. the first layer has no BP, or partial N:M groups keep more).
            "work_bound": de.totals["macs"] / sp.totals["macs"],
            "energy_ratio": de.totals["energy_pj"] / sp.totals["energy_pj"]}
