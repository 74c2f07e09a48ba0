"""A rule-based CPU schedule for the generic per-node kernels of ``sparsec.backends.te.rules``.

``schedule_cpu(func, target)`` applies, in order, each step on a copy of the
schedule and keeps it only if it succeeded, so a failing transformation
degrades to a less scheduled (never a broken) function:

1. inline every injective block into its consumers (except ``pack*``/``pad``
   copies and outputs);
2. ``matmul`` blocks: register tile ``mi x nj`` (``cache_write`` to local),
   ``k`` split by 4 and unrolled, ``j`` vectorised, batch and ``i`` tiles fused
   and parallel, the epilogue (bias, alpha/beta, cast) inlined into the
   write-back;
3. ``conv2d``: the same register tile over (output channels x output columns);
4. row reductions (softmax, layer_norm) computed at their consumer's row loop;
5. every other block: outer spatial loops fused and parallel (when the block
   is large enough to pay for the threads), the innermost spatial loop split
   by the vector width (or the largest divisor of its extent that fits) and
   vectorised — only constant extents are vectorised.

Knobs (``TE_KNOBS``, declared here for the autotuner; their defaults are the
rule-based schedule above, exactly what ``sparsec compile`` builds without a
tuning database):

- ``parallel``: ``None`` = the rule (parallel when the block is large enough),
  ``False`` = never (no thread-pool wake-up: small kernels on few cores),
  ``True`` = always, whatever the size;
- ``reduce_lanes``: row reductions that are plain sums (softmax's denominator,
  layer norm's mean and variance) are split by this many lanes and
  ``rfactor``-ed into a vectorised partial sum before being computed at the
  row loop (``None``: the scalar reduction loop; default 16). Summation order
  changes, the result stays within float rounding.
"""
from __future__ import annotations

import logging
import math

from tvm import s_tir, tirx

from sparsec.backends.kernels.common import Knob
from sparsec.ir.errors import ParameterError

log = logging.getLogger(__name__)

TE_KNOBS = (
    Knob("parallel", (None, False, True), None, "None: parallel when large enough; False: serial; True: always"),
    # default 16: BERT-base sites (2 layers, seq 128) measured layer norm 0.11-0.21x and softmax 0.40-0.42x
    # the scalar reduction's time, with a one- or two-thread pool (docs/autotune.md)
    Knob("reduce_lanes", (None, 8, 16), 16, "rfactor a row sum into this many vector lanes (None: scalar)"),
)
TRANSPOSE_KNOBS = (TE_KNOBS[0],)


def check_te_knobs(knobs: dict | None, declared=TE_KNOBS) -> dict:
    """``knobs`` completed with defaults; an unknown name or value is a ParameterError."""
    known = {k.name: k for k in declared}
    out = {k.name: k.default for k in declared}
    for name, v in (knobs or {}).items():
        if name not in known:
            raise ParameterError(f"schedule knob {name!r} unknown; known: {', '.join(known)}")
        if v not in known[name].candidates:
            raise ParameterError(f"schedule knob {name}={v!r} not one of {known[name].candidates}")
        out[name] = v
    return out

PARALLEL_MIN_ELEMS = 4096   # below this the thread-pool launch costs more than it saves
DATA_PAR = 0


def _vector_bits(target) -> int:
    """SIMD width in bits for ``target``, from LLVM (512 on AVX-512)."""
    if target is None:
        return 256
    try:
        import tvm_ffi
        return int(tvm_ffi.get_global_func("target.llvm_get_vector_width")(target))
    except Exception:  # not an llvm target, or an older TVM: a safe width
        return 256


def _extent(sch, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _name(sch, blk) -> str:
    return sch.get(blk).name_hint


def _is_injective(sch, blk) -> bool:
    return all(int(iv.iter_type) == DATA_PAR for iv in sch.get(blk).iter_vars)


def _n_spatial(sch, blk) -> int:
    n = 0
    for iv in sch.get(blk).iter_vars:
        if int(iv.iter_type) != DATA_PAR:
            break
        n += 1
    return n


def _largest_divisor(n: int, cands) -> int:
    for c in cands:
        if c <= n and n % c == 0:
            return c
    return 1


def _try(sch, step, *args):
    """Run ``step(sch_copy, *args)``; return the new schedule, or the old one if it raised."""
    trial = sch.copy()
    try:
        step(trial, *args)
        return trial, True
    except Exception as exc:  # a schedule primitive refused: keep the previous, valid schedule
        log.debug("schedule step %s%s skipped: %s", step.__name__, args, str(exc).strip().splitlines()[:1])
        return sch, False


# -- steps ---------------------------------------------------------------------------------------------

def _inline_one(sch, name):
    sch.compute_inline(sch.get_sblock(name))


def _inline_all(sch):
    root = sch.get_sblock("root")
    outputs = {_name(sch, b) for b in sch.get_output_blocks(root)}
    tried: set[str] = set()
    while True:
        cands = [n for n in (_name(sch, b) for b in _blocks(sch))
                 if n not in outputs and n not in tried and not n.startswith(("pack", "pad"))
                 and _is_injective(sch, sch.get_sblock(n))]
        if not cands:
            return sch
        tried.add(cands[0])
        sch, _ = _try(sch, _inline_one, cands[0])


def _consumers_inline(sch, blk):
    for c in sch.get_consumers(blk):
        try:
            sch.reverse_compute_inline(c)
        except Exception as exc:
            log.debug("reverse inline into %s skipped: %s", _name(sch, blk), str(exc).strip().splitlines()[:1])


def _schedule_matmul(sch, name, vbits, par=None):
    blk = sch.get_sblock(name)
    loops = sch.get_loops(blk)
    *batch, i, j, k = loops
    M, N, K = (_extent(sch, x) for x in (i, j, k))
    lanes = max(vbits // 32, 4)
    mi = _largest_divisor(M, (8, 6, 4, 2))
    nj = _largest_divisor(N, (4 * lanes, 2 * lanes, lanes, lanes // 2, 4))
    kk = _largest_divisor(K, (4, 2))
    io, ii = sch.split(i, [None, mi])
    jo, ji = sch.split(j, [None, nj])
    ko, ki = sch.split(k, [None, kk])
    sch.reorder(*batch, io, jo, ko, ki, ii, ji)
    cw = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(cw, jo)
    _consumers_inline(sch, cw)
    if nj > 1:
        sch.vectorize(ji)
    if mi > 1:
        sch.unroll(ii)
    if kk > 1:
        sch.unroll(ki)
    work = M * N * math.prod(_extent(sch, b) for b in batch)
    outer = sch.fuse(*batch, io) if batch else io
    if par is True or (par is None and work >= PARALLEL_MIN_ELEMS // 4):
        sch.parallel(outer)
    sch.decompose_reduction(blk, ko)
    if nj > 1:
        sch.vectorize(sch.get_loops(cw)[-1])


def _schedule_conv(sch, name, vbits, par=None):
    blk = sch.get_sblock(name)
    n, o, y, x, rc, ry, rx = sch.get_loops(blk)
    O, OW = _extent(sch, o), _extent(sch, x)
    lanes = max(vbits // 32, 4)
    oi_f = _largest_divisor(O, (8, 4, 2))
    xi_f = _largest_divisor(OW, tuple(range(min(OW, lanes), 1, -1)))
    oo, oi = sch.split(o, [None, oi_f])
    xo, xi = sch.split(x, [None, xi_f])
    sch.reorder(n, oo, y, xo, rc, ry, rx, oi, xi)
    cw = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(cw, xo)
    _consumers_inline(sch, cw)
    if xi_f > 1:
        sch.vectorize(xi)
    if oi_f > 1:
        sch.unroll(oi)
    outer = sch.fuse(n, oo, y)
    if par is not False:
        sch.parallel(outer)
    sch.decompose_reduction(blk, rc)
    if xi_f > 1:
        sch.vectorize(sch.get_loops(cw)[-1])


def _row_reduction_at(sch, name):
    """Compute a keepdim-shaped reduction (trailing unit dims) inside its consumer's row loop."""
    blk = sch.get_sblock(name)
    # spatial iter vars (an rfactor write-back block lists its reduction var first)
    n_sp = sum(int(iv.iter_type) == DATA_PAR for iv in sch.get(blk).iter_vars)
    loops = sch.get_loops(blk)[:n_sp]
    ext = [_extent(sch, lp) for lp in loops]
    lead = n_sp
    while lead > 0 and ext[lead - 1] == 1:
        lead -= 1
    if lead == n_sp or lead == 0:
        raise ValueError("not a row reduction")
    root = sch.get_sblock("root")
    outputs = {_name(sch, b) for b in sch.get_output_blocks(root)}
    consumers = [c for c in sch.get_consumers(blk) if _name(sch, c) in outputs]
    if len(consumers) != 1:
        raise ValueError("no single output consumer")
    sch.compute_at(blk, sch.get_loops(consumers[0])[lead - 1], preserve_unit_loops=False)


def _rfactor_row_sum(sch, name, lanes):
    """Split a row sum's reduction loop by ``lanes`` and rfactor it: partial sums in a vector."""
    blk = sch.get_sblock(name)
    r = sch.get_loops(blk)[-1]
    ext = _extent(sch, r)
    if ext is None or ext % lanes or ext < 2 * lanes:
        raise ValueError("reduction extent does not split by the lanes")
    _, ri = sch.split(r, [None, lanes])
    sch.rfactor(ri, 0)


def _rf_at_row(sch, name):
    """After ``name`` went to its consumer's row loop: its rfactor block goes there too."""
    rf = sch.get_sblock(name + "_rf")
    blk = sch.get_sblock(name)
    sch.compute_at(rf, sch.get_loops(blk)[-2], preserve_unit_loops=False)
    ri, ro = sch.get_loops(rf)[-2:]      # the lanes (spatial for rf) come first: put them innermost
    sch.reorder(ro, ri)


def _rf_vectorize(sch, name):
    """The rfactor block's lanes vectorised (its init hoisted out of the reduction loop)."""
    rf = sch.get_sblock(name + "_rf")
    ro, ri = sch.get_loops(rf)[-2:]
    try:
        init = sch.decompose_reduction(rf, ro)
        sch.vectorize(ri)
        sch.vectorize(sch.get_loops(init)[-1])
    except Exception:      # noqa: BLE001 - decomposed, the update may not pass vectorize's dataflow check
        raise ValueError("decomposed rf block not vectorisable") from None


def _rf_vectorize_inner(sch, name):
    sch.vectorize(sch.get_loops(sch.get_sblock(name + "_rf"))[-1])


ROW_SUMS = ("softmax_sum", "ln_mean", "ln_var")


def _dtype_bits(dtype: str) -> int:
    digits = "".join(ch for ch in str(dtype) if ch.isdigit())
    return max(int(digits), 8) if digits else 8


def _write_dtype(sch, blk) -> str:
    region = sch.get(blk).writes[0]
    src = region.source if hasattr(region, "source") else region.buffer
    return str(src.dtype)


def _spatial_loops(sch, name):
    blk = sch.get_sblock(name)
    n_sp = _n_spatial(sch, blk)
    loops = sch.get_loops(blk)
    # loops above a compute_at point can be shorter than the block's own spatial nest
    spatial = loops[len(loops) - len(sch.get(blk).iter_vars):][:n_sp] if len(loops) >= n_sp else loops
    return blk, spatial


def _vectorize_inner(sch, name, vbits):
    blk, spatial = _spatial_loops(sch, name)
    if not spatial or not _is_injective(sch, blk):
        return
    last = _extent(sch, spatial[-1])
    if last is None or last < 4:
        return
    lanes = max(vbits // _dtype_bits(_write_dtype(sch, blk)), 2)
    v = _largest_divisor(last, (lanes, lanes // 2, lanes // 4, 4) if lanes >= 8 else (lanes, 2))
    if v <= 1:
        return
    if v == last:
        sch.vectorize(spatial[-1])
    else:
        _, vi = sch.split(spatial[-1], [None, v])
        sch.vectorize(vi)


def _parallel_outer(sch, name, k):
    blk = sch.get_sblock(name)
    loops = sch.get_loops(blk)
    lp = sch.fuse(*loops[:k]) if k > 1 else loops[0]
    sch.parallel(lp)


def _schedule_generic(sch, name, vbits, par=None):
    """Vectorise the innermost spatial loop, then parallelise the outer ones (each step optional)."""
    blk, spatial = _spatial_loops(sch, name)
    ext = [_extent(sch, lp) for lp in spatial]
    if not spatial or any(e is None for e in ext):
        return sch
    numel = math.prod(ext)
    sch, _ = _try(sch, _vectorize_inner, name, vbits)
    if par is False or (par is None and numel < PARALLEL_MIN_ELEMS):
        return sch
    loops = sch.get_loops(sch.get_sblock(name))
    ext = [_extent(sch, lp) for lp in loops]
    k, work = 0, 1
    while k < len(loops) and work < 64 and int(sch.get(loops[k]).kind) == 0 and ext[k] is not None:
        work *= ext[k]
        k += 1
    for kk in range(k, 0, -1):  # fewer fused loops when a compute_at'ed block sits between them
        sch, ok = _try(sch, _parallel_outer, name, kk)
        if ok:
            break
    return sch


def schedule_cpu(func, target=None, knobs: dict | None = None):
    """A scheduled copy of ``func`` (a PrimFunc from ``te.create_prim_func``); never raises
    (except a ParameterError for unknown ``knobs``; see ``TE_KNOBS``; None: the rules)."""
    kn = check_te_knobs(knobs)
    par, lanes = kn["parallel"], kn["reduce_lanes"]
    try:
        sch = s_tir.Schedule(func)
    except Exception as exc:
        log.debug("schedule_cpu: cannot schedule: %s", exc)
        return func
    vbits = _vector_bits(target)
    sch = _inline_all(sch)
    names = [_name(sch, b) for b in _blocks(sch)]
    done: set[str] = set()
    for name in names:
        if name.startswith("matmul"):
            sch, ok = _try(sch, _schedule_matmul, name, vbits, par)
            done.add(name)
        elif name.startswith("conv2d") and not name.startswith("conv2d_out"):
            sch, ok = _try(sch, _schedule_conv, name, vbits, par)
            done.add(name)
    rf = set()
    if lanes:
        for name in names:
            if name in ROW_SUMS:
                sch, ok = _try(sch, _rfactor_row_sum, name, lanes)
                if ok:
                    rf.add(name)
    for name in reversed(names):  # the last reduction first: earlier ones go in front of it
        if name.startswith(("softmax_", "ln_")):
            sch, ok = _try(sch, _row_reduction_at, name)
            if ok:
                done.add(name)
                if name in rf:
                    sch, ok = _try(sch, _rf_at_row, name)
                    if not ok:
                        rf.discard(name)
    for name in names:    # after every compute_at (a decomposed reduction blocks further ones)
        if name in rf and name in done:
            sch, ok = _try(sch, _rf_vectorize, name)
            if not ok:      # init left inside: a uniform branch in the vector loop
                sch, _ = _try(sch, _rf_vectorize_inner, name)
            done.update((name + "_rf", name + "_rf_init"))
    for name in [_name(sch, b) for b in _blocks(sch)]:
        if name in done or any(name.startswith(d + "_") for d in done if d.startswith(("matmul", "conv2d"))):
            continue  # the tile's init / write-back blocks
        sch = _schedule_generic(sch, name, vbits, par)
    return sch.mod["main"]
