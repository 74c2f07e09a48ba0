"""GPU schedules for the generic per-node kernels of ``sparsec.backends.te.rules`` (CUDA).

``schedule_cuda(func, target)`` returns a copy of ``func`` in which every block
runs under a thread binding (a CUDA kernel cannot run loops on the host):

1. TVM's dlight GPU rules, tried one at a time in this order: ``Matmul``
   (shared-memory tiles; attention's batched matmuls), ``GEMV``,
   ``Reduction``, ``GeneralReduction`` (softmax, layer_norm rows), ``Fallback``
   (injective ops, simple reductions);
2. if no rule applies, or one leaves a block unbound (the rules return
   ``None`` for shapes they do not handle and may raise), a plain schedule:
   injective producers inlined, then each remaining root block's spatial
   loops fused and split over ``(blockIdx.x, threadIdx.x)``, its reduction
   loops serial inside the thread (correct for any block, slow for large
   reductions).

A function whose blocks cannot all be bound raises ``ScheduleError`` naming
the blocks: building it would otherwise fail later with an opaque
"variable is not bound to any thread" from the CUDA codegen.
"""
from __future__ import annotations

import logging

from tvm import s_tir, tirx

from sparsec.ir.errors import SparsecError

log = logging.getLogger(__name__)

THREADS = 256
DATA_PAR = 0
THREAD_BINDING = 4   # tirx.ForKind.THREAD_BINDING


class ScheduleError(SparsecError):
    """No GPU schedule binds every block of a kernel to threads."""


def _rules():
    from tvm.s_tir import dlight as dl

    return [("Matmul", dl.gpu.Matmul()), ("GEMV", dl.gpu.GEMV()), ("Reduction", dl.gpu.Reduction()),
            ("GeneralReduction", dl.gpu.GeneralReduction()), ("Transpose", dl.gpu.Transpose()),
            ("Fallback", dl.gpu.Fallback())]


def unbound_blocks(func) -> list[str]:
    """Blocks of ``func`` with no thread-bound loop around them (they would run on the host)."""
    sch = s_tir.Schedule(func)
    out = []
    todo = list(sch.get_child_blocks(sch.get_sblock("root")))
    while todo:
        blk = todo.pop()
        if not any(int(sch.get(lp).kind) == THREAD_BINDING for lp in sch.get_loops(blk)):
            out.append(sch.get(blk).name_hint)
        todo.extend(sch.get_child_blocks(blk))
    return out


def lowers(func, target) -> bool:
    """True when ``func`` goes through TVM's TIR lowering for ``target`` (no codegen, no nvcc).

    dlight schedules can be valid schedules that the lowering refuses (e.g. a cross-thread
    reduction over a reducer it cannot match: sparsec's NaN-propagating max)."""
    import tvm

    try:
        mod = tvm.tirx.transform.BindTarget(target.with_host("llvm"))(tvm.IRModule({"main": func}))
        pipeline, _, finalize_device = tvm.tirx.get_tir_pipeline("default")
        mod = pipeline(mod)
        from tvm.tirx.build import split_host_device_mods

        _, devs = split_host_device_mods(mod)
        for dmod in devs.values():
            finalize_device()(dmod)
        return True
    except Exception as exc:  # noqa: BLE001
        log.debug("lowering refused: %s", str(exc).strip().splitlines()[-1:] )
        return False


def _is_injective(sch, blk) -> bool:
    return all(int(iv.iter_type) == DATA_PAR for iv in sch.get(blk).iter_vars)


def _plain(func):
    """Inline injective producers; bind each remaining root block's fused spatial loops."""
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
    changed = True
    while changed:
        changed = False
        for b in sch.get_child_blocks(root):
            name = sch.get(b).name_hint
            if name in outputs or not _is_injective(sch, b):
                continue
            try:
                sch.compute_inline(b)
                changed = True
                break
            except Exception:  # noqa: BLE001  (a block that cannot be inlined stays a kernel of its own)
                continue
    for b in sch.get_child_blocks(root):
        loops = sch.get_loops(b)
        n_sp = 0
        for iv in sch.get(b).iter_vars:
            if int(iv.iter_type) != DATA_PAR:
                break
            n_sp += 1
        spatial = loops[:n_sp]
        if not spatial:          # a full reduction to a scalar: one thread
            lp = sch.add_unit_loop(b)
            sch.bind(lp, "blockIdx.x")
            continue
        fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        bx, tx = sch.split(fused, [None, THREADS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    return sch.mod["main"]


def schedule_cuda(func, target):
    """A GPU-scheduled copy of ``func`` (from ``te.create_prim_func``); see the module docstring."""
    with target:
        for name, rule in _rules():
            try:
                sch = rule.apply(func, target, False)
            except Exception as exc:  # noqa: BLE001  (a rule refusing a shape it does not handle)
                log.debug("dlight %s skipped: %s", name, str(exc).strip().splitlines()[:1])
                continue
            if sch is None:
                continue
            if isinstance(sch, list):
                sch = sch[0]
            out = sch.mod["main"]
            try:
                if not unbound_blocks(out) and lowers(out, target):
                    return out.with_attr("tirx.is_scheduled", True).with_attr("sparsec.gpu_schedule", f"dlight {name}")
            except Exception as exc:  # noqa: BLE001
                log.debug("dlight %s result unusable: %s", name, exc)
    try:
        out = _plain(func)
    except Exception as exc:  # noqa: BLE001
        raise ScheduleError(f"no GPU schedule for kernel: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    left = unbound_blocks(out)
    if not left and not lowers(out, target):
        raise ScheduleError("the plain GPU schedule does not lower (see the debug log)")
    if left:
        raise ScheduleError(f"no GPU schedule binds block(s) {', '.join(left)} to threads")
    return out.with_attr("tirx.is_scheduled", True).with_attr("sparsec.gpu_schedule", "plain")
