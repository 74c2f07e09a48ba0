"""A training step as one step sequence through SAT's DMA/array pipeline.

Order: FF of every layer (first to last), then for every layer from last to
first its backward block: BP and WU. The three dataflow optimisations act
here and in ``schedule``:

- **interleave mapping** (``Opts.interleave``): each phase picks the array
  mapping (WS/OS/IS, from ``[array] dataflows``) with the lowest planned
  cost instead of the fixed ``[array] dataflow``; and a layer's BP (N:M
  sparse, bandwidth-heavy) and WU (dense, compute-heavy) steps, which are
  independent, are interleaved in proportion in one sequence so the DMA of
  one overlaps the compute of the other. Cost: each of the two phases then
  owns only half of every operand buffer (smaller tiles, more traffic).
- **pre-generation** (``Opts.pregen``): FF/BP load N:M-compressed weights
  (values + ceil(log2 M)-bit indices) prepared off the critical path. Cost:
  after a layer's WU the prune unit reads its dense weight and writes the two
  compressed copies (FF and BP masks); that traffic is spread over the DMA
  jobs of the next backward block (the first layer's is an exposed tail).
  Without it, FF/BP load dense weight tiles and the prune unit ranks every
  group of a tile before its fold can start (on the critical path).
- **offline scheduling** (``Opts.offline``): see ``schedule.plan``.

The non-GEMM work of the step (``build_step``, unless ``[step] gemm_only``)
goes into the same sequence where the network does it: a layer's ``post``
ops after its FF (forward passes on the vector unit, activation × activation
``MatMul``s on the array) and their backward, in reverse, before its BP/WU;
its weight update (``vector.optimiser_pass``) right after its WU, so the
pre-generation that follows reads the updated weight; ``pre`` ops
(embeddings) before its FF and after its update.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction as Fr

import numpy as np

from sparsec.ir.errors import ParameterError
from sparsec.sim.sat import schedule, vector
from sparsec.sim.sat.buffers import lag
from sparsec.sim.sat.dram import DramTiming
from sparsec.sim.sat.workloads import Gemm, Layer, MatMul, Vec, matmul_gemms, training_gemms

OPTS = ("interleave", "pregen", "offline")


@dataclass(frozen=True)
class Opts:
    interleave: bool = True
    pregen: bool = True
    offline: bool = True

    @classmethod
    def parse(cls, text: str) -> "Opts":
        """``all`` | ``none`` | a comma list of interleave, pregen, offline (the ones switched on)."""
        s = str(text).strip().lower()
        if s == "all":
            return cls()
        if s in ("none", ""):
            return cls(False, False, False)
        names = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in names if x not in OPTS]
        if bad:
            raise ParameterError(f"--opts: unknown optimisation(s) {', '.join(bad)}; "
                                 f"expected all, none or a list of {', '.join(OPTS)}")
        return cls(*(o in names for o in OPTS))

    def __str__(self):
        on = [o for o in OPTS if getattr(self, o)]
        return "all" if len(on) == 3 else ("none" if not on else ",".join(on))


@dataclass
class Block:
    """Consecutive steps of one or two GEMMs (two when BP and WU are interleaved)."""

    steps: list                  # schedule.Steps
    gid: np.ndarray              # which of ``steps`` each merged step belongs to
    sid: np.ndarray              # its index inside that Steps
    bg_bursts: np.ndarray = None  # background (pre-generation) bursts per step
    bg_prune: np.ndarray = None   # background prune-unit cycles per step
    bg_owner: str = ""            # layer whose weights the background traffic prepares
    bg_bytes: int = 0
    bg_groups: int = 0


@dataclass
class Sequence:
    blocks: list
    cfg: object
    opts: Opts
    lag: int
    # concatenated per-step arrays
    comp: np.ndarray = field(default=None)
    job_bursts: np.ndarray = field(default=None)
    job_extra: np.ndarray = field(default=None)   # background prune cycles (max'ed with DMA time)
    block_end: np.ndarray = field(default=None)   # index one past each block's last step


def _merge(a: schedule.Steps, b: schedule.Steps) -> tuple[np.ndarray, np.ndarray]:
    """Interleave two step lists in proportion to their lengths."""
    ka = (np.arange(len(a)) + 0.5) / len(a)
    kb = (np.arange(len(b)) + 0.5) / len(b)
    gid = np.concatenate([np.zeros(len(a), np.int64), np.ones(len(b), np.int64)])
    sid = np.concatenate([np.arange(len(a)), np.arange(len(b))])
    order = np.argsort(np.concatenate([ka, kb]), kind="stable")
    return gid[order], sid[order]


def _choose(g: Gemm, cfg, opts: Opts, share: float):
    names = cfg.array.dataflows if opts.interleave else (cfg.array.dataflow,)
    pregen = opts.pregen
    best = None
    for name in names:
        p = schedule.plan(g, name, cfg, opts.offline, pregen, share)
        if best is None or p.estimate < best.estimate:
            best = p
    return schedule.repeat(schedule.build(g, best, cfg, pregen), g.count)


def _pregen_traffic(layer_gemms: list[Gemm], cfg) -> tuple[list[int], int]:
    """Transfers (bytes) and prune groups of pre-generating one layer's two compressed weights."""
    ff = next(g for g in layer_gemms if g.phase == "FF")
    if not ff.sparse:
        return [], 0
    eb = cfg.data.elem_bytes
    ib = cfg.index_bits(ff.groups.m)
    k, co = ff.k, ff.n
    kc_ff = ff.kc
    bp_g = ff.groups.__class__(co, 1, ff.groups.n, ff.groups.m)
    kc_bp = bp_g.kept_len
    comp = lambda e: e * eb + -(-e * ib // 8)
    transfers = [k * co * eb, comp(kc_ff * co), comp(kc_bp * k)]
    groups = len(ff.groups.lengths()) * co + len(bp_g.lengths()) * k
    return transfers, groups


@dataclass
class LayerWork:
    """The non-GEMM work around one layer, as items: ``Gemm``, ``VecPass`` or a (BP, WU) ``Gemm`` pair."""

    pre_ff: list = field(default_factory=list)
    post_ff: list = field(default_factory=list)
    post_bp: list = field(default_factory=list)
    update: list = field(default_factory=list)
    pre_bp: list = field(default_factory=list)


def _vec_passes(op: Vec, batch: int, cfg, backward: bool) -> list:
    fwd, bwd = vector.KINDS[op.kind]
    specs = (bwd if backward else fwd)(cfg.data.elem_bytes, Fr(op.ratio).limit_denominator(1 << 16))
    phase = "VB" if backward else "VF"
    return [vector.VecPass(op.name if len(specs) == 1 else f"{op.name}.{sp.name}", phase, sp, op.elems * batch)
            for sp in specs]


def _ops_work(ops, batch: int, cfg, backward: bool) -> list:
    out = []
    for op in (reversed(ops) if backward else ops):
        if isinstance(op, Vec):
            out += _vec_passes(op, batch, cfg, backward)
        elif isinstance(op, MatMul):
            ff, bp, wu = matmul_gemms(op, batch)
            out.append((bp, wu) if backward else ff)
        else:
            raise ParameterError(f"unknown non-GEMM op {op!r}")
    return out


def layer_work(layer: Layer, batch: int, cfg, sparse: bool, optimizer: str) -> LayerWork:
    """The vector passes and activation GEMMs of ``layer``'s pre/post ops and its weight update."""
    e, f = cfg.data.elem_bytes, cfg.step.master_bytes
    upd = vector.VecPass(f"{layer.name}.update", "OPT",
                         vector.optimiser_pass(optimizer, layer.params, layer.pruned_params if sparse else 0,
                                               e, f, cfg.step.srste),
                         layer.params)
    return LayerWork(_ops_work(layer.pre, batch, cfg, False), _ops_work(layer.post, batch, cfg, False),
                     _ops_work(layer.post, batch, cfg, True), [upd], _ops_work(layer.pre, batch, cfg, True))


def build_step(layers: list[Layer], batch: int, pattern, cfg, opts: Opts, optimizer: str | None = None,
               progress=None) -> Sequence:
    """The whole training step's sequence: GEMMs, and unless ``[step] gemm_only`` the non-GEMM work."""
    per_layer = training_gemms(layers, batch, pattern)
    if cfg.step.gemm_only:
        return build_sequence(per_layer, cfg, opts, progress)
    opt = optimizer or cfg.step.optimizer
    extras = [layer_work(l, batch, cfg, not pattern.dense, opt) for l in layers]
    return build_sequence(per_layer, cfg, opts, progress, extras)


def build_sequence(per_layer: list[list[Gemm]], cfg, opts: Opts, progress=None,
                   extras: list[LayerWork] | None = None) -> Sequence:
    """Plan every GEMM and vector pass and lay the training step out as one step sequence."""
    blocks: list[Block] = []

    def single(g):
        s = vector.build(g, cfg) if isinstance(g, vector.VecPass) else _choose(g, cfg, opts, 1.0)
        if progress:
            progress()
        return Block([s], np.zeros(len(s), np.int64), np.arange(len(s)))

    def pair(bp, wu):
        if bp and opts.interleave:
            sb, sw = _choose(bp[0], cfg, opts, 0.5), _choose(wu, cfg, opts, 0.5)
            if progress:
                progress(); progress()
            gid, sid = _merge(sb, sw)
            return [Block([sb, sw], gid, sid)]
        return [single(g) for g in bp + [wu]]

    def items(work):
        out = []
        for it in work:
            out += pair([it[0]], it[1]) if isinstance(it, tuple) else [single(it)]
        return out

    extras = extras or [LayerWork() for _ in per_layer]
    for gl, ex in zip(per_layer, extras):
        blocks += items(ex.pre_ff)
        blocks.append(single(next(g for g in gl if g.phase == "FF")))
        blocks += items(ex.post_ff)
    pending = None   # (owner, transfers, groups) of the previous layer's pre-generation
    dram = DramTiming(cfg)
    for gl, ex in zip(reversed(per_layer), reversed(extras)):
        bp = [g for g in gl if g.phase == "BP"]
        wu = next(g for g in gl if g.phase == "WU")
        new = items(ex.post_bp) + pair(bp, wu) + items(ex.update) + items(ex.pre_bp)
        if pending is not None:
            _attach(new[0], pending, dram, cfg.prune.groups_per_cycle)
        blocks += new
        pending = None
        if opts.pregen:
            tr, groups = _pregen_traffic(gl, cfg)
            if tr:
                pending = (gl[0].layer, tr, groups)
    if pending is not None:   # the first layer's pre-generation: an exposed tail
        tail = Block([], np.zeros(1, np.int64), np.zeros(1, np.int64))
        _attach(tail, pending, dram, cfg.prune.groups_per_cycle)
        blocks.append(tail)
    return _concat(blocks, cfg, opts)


def _attach(block: Block, pending, dram: DramTiming, gpc: int) -> None:
    owner, transfers, groups = pending
    n = len(block.gid)
    bursts = int(sum(dram.bursts(transfers)))
    block.bg_bursts = np.full(n, bursts // n, np.int64)
    block.bg_bursts[: bursts % n] += 1
    prune_total = -(-groups // gpc)
    block.bg_prune = np.full(n, prune_total // n, np.int64)
    block.bg_prune[: prune_total % n] += 1
    block.bg_owner, block.bg_bytes, block.bg_groups = owner, int(sum(transfers)), groups


def _concat(blocks: list[Block], cfg, opts: Opts) -> Sequence:
    L = lag(cfg)
    comp, lb, wb, bg, bgp, ends = [], [], [], [], [], []
    total = 0
    for b in blocks:
        n = len(b.gid)
        if b.steps:
            c = np.empty(n, np.int64)
            l_ = np.empty(n, np.int64)
            w_ = np.empty(n, np.int64)
            for i, s in enumerate(b.steps):
                sel = b.gid == i
                idx = b.sid[sel]
                c[sel] = s.fold[idx] + s.prune[idx]
                l_[sel] = s.load_bursts[idx]
                w_[sel] = s.write_bursts[idx]
        else:
            c, l_, w_ = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        comp.append(c), lb.append(l_), wb.append(w_)
        bg.append(b.bg_bursts if b.bg_bursts is not None else np.zeros(n, np.int64))
        bgp.append(b.bg_prune if b.bg_prune is not None else np.zeros(n, np.int64))
        total += n
        ends.append(total)
    comp, lb, wb = np.concatenate(comp), np.concatenate(lb), np.concatenate(wb)
    bg, bgp = np.concatenate(bg), np.concatenate(bgp)
    S = len(comp)
    jb = np.zeros(S + L, np.int64)
    jb[:S] += lb + bg
    jb[L:] += wb
    extra = np.zeros(S + L, np.int64)
    extra[:S] = bgp
    return Sequence(blocks, cfg, opts, L, comp, jb, extra, np.asarray(ends, np.int64))
