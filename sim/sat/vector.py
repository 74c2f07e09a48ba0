"""The vector unit: non-GEMM work of a training step as memory-bound vector passes.

Every element-wise, normalisation, pooling, loss and optimiser op is one or
more *passes*: stream ``elems`` elements through the unit, reading some
streams from DRAM and writing others, doing a few lane operations per
element. ``KINDS`` is the table (per element of the op's *input*, forward
and backward, ``e`` = ``[data] elem_bytes``; ``r`` = the op's output/input
ratio for pooling); ``OPTIMISERS`` the per-parameter update
(``f`` = ``[step] master_bytes`` for the fp32 master weight and each state).

One lane operation is one fp32 FMA, add, compare, select, or one result of
a pipelined special-function unit (exp, tanh, rsqrt, reciprocal). Per-row
reductions (LayerNorm over the hidden size, softmax over a row of scores)
keep the row on chip and need one pass; BatchNorm's statistics span the
whole batch × H × W of a channel, so it reads its input twice. Ops are
not fused with each other or with the array's write-back: each is its own
round trip through DRAM (as a framework runs them op by op).

Timing of a pass: it is split into chunks that fit one slot of the A
(inputs) and Out (outputs) buffers; each chunk is one *step* of the same
DMA/compute pipeline the GEMM folds use, with

    compute  = ceil(chunk · ops / lanes) + [vector] pipeline_cycles
    loads    = Σ over read streams  ceil(ceil(chunk · width) / burst) bursts
    writes   = Σ over write streams ceil(ceil(chunk · width) / burst) bursts

``lanes`` is ``[vector] lanes`` for a separate vector unit, or the array's
``cols`` when ``[vector] unit = "array"`` (the systolic array fed along one
edge, one element per column per cycle).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as Fr

import numpy as np

from sparsec.ir.errors import ParameterError
from sparsec.sim.sat.buffers import buffers
from sparsec.sim.sat.dram import DramTiming


@dataclass(frozen=True)
class PassSpec:
    """One streaming pass: read/write stream widths (bytes per element) and lane ops per element."""

    name: str
    reads: tuple
    writes: tuple
    ops: Fr


def _p(name, reads, writes, ops):
    return PassSpec(name, tuple(Fr(x) for x in reads), tuple(Fr(x) for x in writes), Fr(ops))


# kind -> (forward passes, backward passes), each a function of (e, r)
KINDS = {
    # BN (training): stats pass Σx, Σx² (2 ops); normalise y = a·x + b (1 FMA).
    # Backward: Σdy and Σdy·x̂ (x̂ recomputed: 3 ops); dx = a·dy + b·x̂ + c (x̂ + 2 FMA: 3 ops).
    "bn": (lambda e, r: [_p("stats", [e], [], 2), _p("norm", [e], [e], 1)],
           lambda e, r: [_p("sums", [e, e], [], 3), _p("dx", [e, e], [e], 3)]),
    # LN (row on chip): Σx, Σx² (2) then (x − μ)·(rstd·γ) + β (2). Backward reads dy, x:
    # x̂ (1), g = dy·γ (1), Σg, Σg·x̂ (2), dx (2), dγ += dy·x̂, dβ += dy (2).
    "ln": (lambda e, r: [_p("fwd", [e], [e], 4)], lambda e, r: [_p("bwd", [e, e], [e], 8)]),
    "relu": (lambda e, r: [_p("fwd", [e], [e], 1)], lambda e, r: [_p("bwd", [e, e], [e], 1)]),  # bwd reads dy, y
    # GELU (tanh form): x², FMA, mul, tanh, (1 + t)·0.5x (2) = 6; backward recomputes u, t (4),
    # 1 − t² (1), du/dx (1), combine (3), × dy (1) = 10; reads dy, x.
    "gelu": (lambda e, r: [_p("fwd", [e], [e], 6)], lambda e, r: [_p("bwd", [e, e], [e], 10)]),
    "tanh": (lambda e, r: [_p("fwd", [e], [e], 1)], lambda e, r: [_p("bwd", [e, e], [e], 2)]),
    # Residual add; its backward is the gradient sum where the two branches fork.
    "add": (lambda e, r: [_p("fwd", [e, e], [e], 1)], lambda e, r: [_p("bwd", [e, e], [e], 1)]),
    # Softmax over a row (1/√dh and masks folded in): max, FMA, exp, Σ, × 1/Σ = 5;
    # backward dS = P ⊙ (dP − Σ dP·P): 3, reads dP, P.
    "softmax": (lambda e, r: [_p("fwd", [e], [e], 5)], lambda e, r: [_p("bwd", [e, e], [e], 3)]),
    # Max pooling: one compare per window element of each output (k²·r per input); stores a
    # 1-byte argmax per output for the backward, which writes every input (dy or 0).
    "maxpool3": (lambda e, r: [_p("fwd", [e], [e * r, r], 9 * r)],
                 lambda e, r: [_p("bwd", [e * r, r], [e], 1)]),
    "maxpool2": (lambda e, r: [_p("fwd", [e], [e * r, r], 4 * r)],
                 lambda e, r: [_p("bwd", [e * r, r], [e], 1)]),
    "avgpool": (lambda e, r: [_p("fwd", [e], [e * r], 1)], lambda e, r: [_p("bwd", [e * r], [e], 1)]),
    # Softmax cross-entropy over the logits: log-sum-exp (max, exp, Σ, pick) = 4;
    # backward softmax − one-hot, / batch = 3.
    "loss": (lambda e, r: [_p("fwd", [e], [], 4)], lambda e, r: [_p("bwd", [e], [e], 3)]),
    # Token + position + segment embedding gather and sum (2 adds); backward scatter-adds dy
    # into the word-embedding gradient rows (read-modify-write), position/segment sums on chip.
    "embed": (lambda e, r: [_p("fwd", [e, e, e], [e], 2)], lambda e, r: [_p("bwd", [e, e], [e], 3)]),
}

# optimiser -> (state tensors per parameter, lane ops per parameter)
#   SGD + momentum + weight decay: g' = g + wd·w, m = μm + g', w −= lr·m            (3 ops)
#   AdamW: m (2), v (3), √v̂ + ε (2), m̂ / (.) (1), w −= lr·(. + wd·w) (3)            (11 ops)
OPTIMISERS = {"sgd": (1, 3), "adamw": (2, 11)}


def optimiser_pass(opt: str, params: int, pruned: int, e: int, f: int, srste: bool) -> PassSpec:
    """The weight update of ``params`` parameters (``pruned`` of them N:M weights) as one pass.

    Reads the fp32 master weight, the gradient (as the WU wrote it) and the states; writes the
    master, the states and the ``e``-byte working copy that FF/BP (or pre-generation) read next.
    SR-STE (sparse runs with ``srste``) adds λ(1 − mask)⊙w to the gradient of the pruned weights:
    it reads their FF mask (1 bit each) and does 2 more ops (select, FMA) on them.
    """
    if opt not in OPTIMISERS:
        raise ParameterError(f"optimiser must be one of {', '.join(OPTIMISERS)}, got {opt!r}")
    states, ops = OPTIMISERS[opt]
    reads = [f, e] + [f] * states
    ops = Fr(ops)
    if srste and pruned:
        reads.append(Fr(pruned, 8 * params))
        ops += Fr(2 * pruned, params)
    return _p(f"opt.{opt}" + ("+srste" if srste and pruned else ""), reads, [f] + [f] * states + [e], ops)


@dataclass(frozen=True)
class VecPass:
    """One pass of one op over ``elems`` elements (the whole batch)."""

    layer: str           # op name, unique per (layer, phase, pass)
    phase: str           # VF (forward) | VB (backward) | OPT (weight update)
    spec: PassSpec
    elems: int

    @property
    def ops(self) -> int:
        return -(-self.elems * self.spec.ops.numerator // self.spec.ops.denominator)

    def stream_bytes(self, n: np.ndarray, widths) -> np.ndarray:
        """Bytes of each stream for chunks of ``n`` elements: ``[len(widths), len(n)]``."""
        n = np.asarray(n, np.int64)
        return np.array([-(-n * w.numerator // w.denominator) for w in widths], np.int64).reshape(len(widths), -1)


def lanes(cfg) -> int:
    return cfg.array.cols if cfg.vector.unit == "array" else cfg.vector.lanes


def chunk_elems(vp: VecPass, cfg) -> int:
    """Elements per step: the largest chunk whose inputs fit one A slot and outputs one Out slot."""
    bufs = buffers(cfg)
    caps = []
    for widths, op in ((vp.spec.reads, "a"), (vp.spec.writes, "out")):
        w = sum(widths, Fr(0))
        if w:
            caps.append(int(Fr(bufs[op].capacity // bufs[op].slots) / w))
    c = min(caps) if caps else vp.elems
    if c < 1:
        raise ParameterError(f"op {vp.layer} {vp.phase}: one element does not fit the A/Out buffers")
    return min(c, vp.elems)


@dataclass
class VecSteps:
    """The step list of one vector pass (same fields the pipeline reads from ``schedule.Steps``)."""

    vp: VecPass
    elems: np.ndarray        # per step
    fold: np.ndarray         # compute cycles on the vector unit
    prune: np.ndarray
    load: np.ndarray
    load_bursts: np.ndarray
    write: np.ndarray
    write_bursts: np.ndarray

    def __len__(self):
        return len(self.fold)


def compute_cycles(n, ops: Fr, lanes_: int, pipeline: int) -> np.ndarray:
    """ceil(n · ops / lanes) + pipeline, vectorised over chunk sizes ``n``."""
    n = np.asarray(n, np.int64)
    return -(-n * ops.numerator // (ops.denominator * lanes_)) + pipeline


def build(vp: VecPass, cfg) -> VecSteps:
    c = chunk_elems(vp, cfg)
    n = np.full(-(-vp.elems // c), c, np.int64)
    n[-1] = vp.elems - c * (len(n) - 1)
    dram = DramTiming(cfg)
    rb = vp.stream_bytes(n, vp.spec.reads) if vp.spec.reads else np.zeros((1, len(n)), np.int64)
    wb = vp.stream_bytes(n, vp.spec.writes) if vp.spec.writes else np.zeros((1, len(n)), np.int64)
    fold = compute_cycles(n, vp.spec.ops, lanes(cfg), cfg.vector.pipeline_cycles)
    return VecSteps(vp, n, fold, np.zeros(len(n), np.int64), rb.sum(0), dram.bursts(rb).sum(0),
                    wb.sum(0), dram.bursts(wb).sum(0))


class VectorUnit:
    """CL: ``lanes`` lane operations per cycle, after ``pipeline`` cycles of fill/drain per step."""

    def __init__(self, cfg):
        self.lanes = lanes(cfg)
        self.pipeline = cfg.vector.pipeline_cycles

    def run(self, elems: int, ops: Fr, trace: list | None = None) -> int:
        """Cycles to push ``elems`` elements of ``ops`` operations each through the lanes."""
        left = -(-elems * ops.numerator // ops.denominator)
        cycles = self.pipeline
        while left > 0:
            left -= min(self.lanes, left)
            cycles += 1
        if trace is not None:
            trace.append(f"vector {elems} elems x {ops} ops on {self.lanes} lanes: {cycles} cycles")
        return cycles
