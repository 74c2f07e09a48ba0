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

    def __getitem__(self, name: str) -> Any:
        return self.knobs[name]


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
        resolved["t_tile"] = auto_t_tile(spec.tokens, family.acc_rows(meta, resolved), lanes)
    if "t_tile" in resolved:
        resolved["t_tile"] = min(resolved["t_tile"], spec.tokens)
    if "lanes" in resolved and resolved["lanes"] is None:
        resolved["lanes"] = lanes
    family.resolve_knobs(meta, spec, resolved, lanes)
    par = T.parallel if resolved.get("parallel", True) else T.serial
    return Plan(lanes=lanes, par=par, vec=T.vectorized, unroll=T.unroll, serial=T.serial, knobs=resolved)
