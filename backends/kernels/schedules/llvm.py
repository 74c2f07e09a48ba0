"""The LLVM CPU schedule: SIMD width from the target, rows in parallel, token tiles
sized so the accumulators stay in vector registers, small loops unrolled."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sparsec.backends.kernels.common import KernelError, MatmulSpec, WeightMeta, ceil_div

# Vector registers a family's accumulator tile may use (of 32 zmm / 16 ymm):
# the rest hold the broadcast weight, loaded activations and addresses.
_ACC_REGS = 16


@dataclass(frozen=True)
class Plan:
    """Loop kinds and resolved knob values for one kernel instance."""

    lanes: int                  # fp32 lanes of one SIMD register
    par: Callable               # outer (row) loop
    vec: Callable               # innermost vector loop
    unroll: Callable
    serial: Callable
    knobs: dict
    cores: int = 1

    def __getitem__(self, name: str) -> Any:
        return self.knobs[name]

    def chunks(self, rows: int) -> tuple[int, int]:
        """``(P, per)``: the parallel row loop as ``P`` chunks of ``per`` consecutive rows.

        A family writes ``for c in par(P): for i in serial(per): o = c*per + i`` (guarded
        by ``o < rows`` when ``P*per > rows``). Buffers a row allocates (its accumulators)
        are then allocated once per chunk: TVM allocates a parallel body's local
        buffers with ``TVMBackendAllocWorkspace`` at every iteration of the parallel
        loop, ~40-80 ns per row on znver5, more than a row's work at T = 1 (3072x768
        bsr 8x1 at 99.9%: 31 us per call, all of it allocation). ``P`` is a few chunks
        per core so a slow core can be balanced by the pool's static split.
        """
        if self.par is self.serial:
            return 1, rows
        p = min(rows, 4 * max(1, self.cores))
        return p, ceil_div(rows, p)


def _lanes(target) -> int:
    from sparsec.backends.target import vector_bits

    return max(1, vector_bits(target) // 32)


def auto_t_tile(tokens: int, acc_rows: int, lanes: int) -> int:
    """Largest token tile (a multiple of the lanes) whose ``acc_rows x tile`` accumulators fit the registers."""
    regs = max(1, _ACC_REGS // max(1, acc_rows))
    tile = regs * lanes
    if tokens <= tile:
        return tokens
    # balance the tiles so the tail is not tiny
    ntiles = ceil_div(tokens, tile)
    return min(tile, ceil_div(ceil_div(tokens, ntiles), lanes) * lanes)


def llvm_plan(family, meta: WeightMeta, spec: MatmulSpec, knobs: dict, target) -> Plan:
    from tvm.script import tirx as T

    lanes = _lanes(target)
    resolved = dict(knobs)
    if "strategy" in resolved and resolved["strategy"] is None:
        resolved["strategy"] = "gemv" if spec.tokens == 1 else "tokens"
    if resolved.get("strategy") == "gemv" and spec.tokens != 1:
        raise KernelError(f"{family.format} kernel: strategy 'gemv' needs tokens == 1, got {spec.tokens}")
    if "t_tile" in resolved and resolved["t_tile"] is None:
        # a family may prefer another register tile than "acc_rows x (16 registers)"
        pref = getattr(family, "preferred_tile", None)
        t = pref(meta, spec, resolved, lanes) if pref is not None else None
        resolved["t_tile"] = t or auto_t_tile(spec.tokens, family.acc_rows(meta, resolved), lanes)
    if "t_tile" in resolved:
        resolved["t_tile"] = min(resolved["t_tile"], spec.tokens)
    if "lanes" in resolved and resolved["lanes"] is None:
        resolved["lanes"] = lanes
    family.resolve_knobs(meta, spec, resolved, lanes)
    par = T.parallel if resolved.get("parallel", True) else T.serial
    try:
        cores = int(target.attrs["num-cores"])
    except (KeyError, TypeError, ValueError):
        cores = 1
    return Plan(lanes=lanes, par=par, vec=T.vectorized, unroll=T.unroll, serial=T.serial, knobs=resolved,
                cores=cores)
