"""The SAT simulator's Python API: one training step, sparse vs dense."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from sparsec.ir.errors import ParameterError
from sparsec.passes.bdwp import DENSE, NM, parse_nm
from sparsec.sim.sat import fast, report
from sparsec.sim.sat.pipeline import Opts, build_step
from sparsec.sim.sat.workloads import Layer


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


def gemm_only(cfg):
    """``cfg`` with ``[step] gemm_only = true``: conv/linear GEMMs (and pre-generation) only."""
    return replace(cfg, step=replace(cfg.step, gemm_only=True))


def simulate(layers: list[Layer], cfg, pattern="2:8", batch: int = 32, opts: Opts | str = Opts(),
             progress=None, optimizer: str | None = None) -> Result:
    """Simulate one training step of ``layers`` on SAT: FF, BP, WU of every layer and, unless
    ``[step] gemm_only``, the non-GEMM work and weight update (``optimizer``, default ``[step] optimizer``)."""
    p = parse_nm(pattern)
    _check_pattern(p, cfg)
    o = Opts.parse(opts) if isinstance(opts, str) else opts
    seq = build_step(layers, batch, p, cfg, o, optimizer, progress)
    tl = fast.evaluate(seq)
    rows = report.phase_stats(seq, tl)
    return Result(str(p), str(o), batch, rows, report.totals(rows, tl.total, cfg), seq, tl)


def compare(layers: list[Layer], cfg, pattern="2:8", batch: int = 32, opts: Opts | str = Opts(),
            progress=None, optimizer: str | None = None, with_gemm_only: bool = True) -> dict:
    """Sparse (BDWP) and dense training steps on the same SAT, their speedup and the bound.

    Unless ``cfg`` is already GEMM-only, ``speedup_gemm_only`` is the speedup of the same step
    without its non-GEMM work (two more simulations; ``with_gemm_only=False`` skips them).
    """
    p = parse_nm(pattern)
    if p.dense:
        raise ParameterError("compare needs an N:M pattern (dense is the baseline)")
    sp = simulate(layers, cfg, p, batch, opts, progress, optimizer)
    de = simulate(layers, cfg, DENSE, batch, opts, progress, optimizer)
    speedup = de.totals["cycles"] / sp.totals["cycles"]
    if cfg.step.gemm_only:
        g_only = speedup
    elif with_gemm_only:
        g = gemm_only(cfg)
        g_only = simulate(layers, g, DENSE, batch, opts).totals["cycles"] / simulate(layers, g, p, batch, opts).totals["cycles"]
    else:
        g_only = None
    return {"sparse": sp, "dense": de, "gemm_only": cfg.step.gemm_only, "speedup_gemm_only": g_only,
            "speedup": speedup,
            "bound": report.bound(p.n, p.m),
            # Ratio of executed MACs: the bound of this workload exactly (it exceeds the formula's
            # when phases' MACs differ, e.g. the first layer has no BP, or partial N:M groups keep more).
            "work_bound": de.totals["macs"] / sp.totals["macs"],
            "energy_ratio": de.totals["energy_pj"] / sp.totals["energy_pj"]}
