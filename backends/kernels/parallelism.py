"""When a CPU matmul kernel's row loop goes over TVM's thread pool: the default of the
families' ``parallel`` knob (``None``: this rule; ``True``/``False``: forced, for the tuner).

The rule: parallel iff the kernel's estimated *serial* time is at least
``PARALLEL_MIN_US`` and the target has more than one core. Handing the row loop to the
pool costs a wake-up and a join (and the chunks' locals through
``TVMBackendAllocWorkspace``), a fixed cost ``POOL_WAKE_US``; the split saves
``t_serial * (1 - 1/s)`` with ``s`` the parallel speedup the machine gives. Parallel pays
when ``t_serial > POOL_WAKE_US * s / (s - 1)``: that is ``PARALLEL_MIN_US``, written out
so that another machine needs only its two measured numbers (``benchmarks/
autotune_headroom.py --parallel-sweep`` measures both).

The serial time is estimated from the work (``serial_us``, ``SERIAL_NS``): per family, a cost
per output row, per matrix cell (bitmap scans words), per stored entry (loading a value and
its index) and per multiply-add (entry x token), fitted on the sweep's serial times.
``stored`` is every entry the format stores (padding and explicit zeros included: the kernel
computes them, ``stored_entries``).

A ``WeightMeta`` does not carry nnz (kernels are specialised on shapes; nnz-sized buffers
are symbolic), so ``build_matmul`` / ``matmul_primfunc`` resolve the rule from the format
object when they are given one -- what ``sparsec compile``, the cost model's calibration
and the autotuner's measurements pass. Given only a meta, the families resolve it with
the matrix as the bound on the stored entries (``rows x cols``).
"""
from __future__ import annotations

# -- measured on the 2-vCPU AMD EPYC (znver5, AVX-512, KVM) with a 2-thread pool ---------------------
# ``benchmarks/autotune_headroom.py --parallel-sweep`` (TVM_NUM_THREADS=2, load 0.4-1.4, 9 interleaved
# rounds, 146 kernels of the 6 families, 1 us - 5 ms): a least-squares fit of
# parallel = POOL_WAKE_US + serial / PARALLEL_SPEEDUP over all of them gave 2.26 us and 1.95 (kernels
# above 500 us: serial/parallel median 1.96, quartiles 1.93-2.01). Measured crossover: serial wins
# at <= 5 us of serial work (csr 256x256 90% T=1 5.0 us: 0.83x), ties at ~4 us, parallel wins from
# 6.7 us on (1.24-1.61x at 7-15 us). With a 1-thread pool a parallel loop never wins (0.15-1.04x in
# all 110 kernels measured so; the pool size is checked, ``pool_threads``).
POOL_WAKE_US = 2.3
PARALLEL_SPEEDUP = 1.95
PARALLEL_MIN_US = POOL_WAKE_US * PARALLEL_SPEEDUP / (PARALLEL_SPEEDUP - 1.0)      # 4.7 us

# Serial time model per family, fitted (non-negative least squares, relative error) on the same
# sweep's serial medians: ns = row * rows * T' + cell * rows * cols + entry * stored + fma * stored * T,
# T' = 1 for the gemv kernels (T = 1, fitted apart: other algorithms) and T for the token kernels.
# Median relative error 1-20% (bitmap: 50-80%, its 768x768 kernels are ~60x its 256x256 ones for
# 9x the elements; the cell term over-estimates small ones, which only moves them to parallel,
# where they measured faster anyway; bsr gemv: only 90% was swept, row and entry terms split by hand
# to match its 3 points within 10%, 256x256 within 2x).
SERIAL_NS = {
    #              gemv (row, cell, entry, fma)       tokens (row, cell, entry, fma)
    "dense":      ((0.0, 0.0, 0.043, 0.0),          (0.0, 0.0, 0.097, 0.0069)),
    "csr":        ((12.4, 0.0, 0.186, 0.0),         (0.055, 0.0, 0.253, 0.0178)),
    "bsr":        ((2.0, 0.0, 0.04, 0.0),            (0.058, 0.0, 0.133, 0.0067)),
    "bitmap":     ((0.0, 0.66, 0.0, 0.0),           (0.0, 0.6, 0.0, 0.024)),
    "nm":         ((2.12, 0.0, 0.309, 0.0),         (0.0, 0.0, 0.098, 0.0168)),
    "groupquant": ((13.1, 0.0, 0.266, 0.0),         (0.0, 0.0, 0.634, 0.0169)),
}


# im2col (conv2d): serial ns per element of ``cols[C*kh*kw, N*Ho*Wo]``; 0.070-0.077 measured on 64-128
# channels at 28x28-56x56, 3x3 (serial/parallel 1.78-1.95x with 2 threads, 0.76-0.78x at <= 37k elements).
IM2COL_NS = 0.075


def im2col_parallel(elements: int, cores: int | None = None) -> bool:
    """The size rule for the im2col copy of ``elements`` outputs."""
    if cores is None:
        cores = _host_cores()
    return cores > 1 and elements * IM2COL_NS / 1000.0 >= PARALLEL_MIN_US


def stored_entries(fmt) -> int:
    """Weight entries the kernel computes with (per token): the format's stored values."""
    name = fmt.name
    if name == "dense":
        return int(fmt.rows) * int(fmt.cols)
    if name == "bsr":
        return int(fmt.blocks.numel())
    if name == "groupquant":
        return int(fmt.group_idx.numel()) * int(fmt.group)
    if hasattr(fmt, "values"):
        return int(fmt.values.numel())      # csr, bitmap, nm (padding slots included)
    return int(fmt.rows) * int(fmt.cols)


def serial_us(family: str, stored: int, tokens: int, rows: int = 0, cols: int = 0) -> float:
    """Estimated serial time (us) of ``family``'s kernel: ``stored`` entries, ``tokens``, and the
    matrix (``rows x cols``) for the per-row / per-cell terms (0: those terms left out)."""
    gemv, tok = SERIAL_NS.get(family, SERIAL_NS["csr"])
    row, cell, entry, fma = gemv if tokens == 1 else tok
    rt = rows if tokens == 1 else rows * tokens
    return (row * rt + cell * rows * cols + entry * stored + fma * stored * tokens) / 1000.0


def parallel_default(family: str, stored: int, tokens: int, cores: int, rows: int = 0, cols: int = 0,
                     min_us: float | None = None) -> bool:
    """The rule: ``True`` (row loop over the pool) iff the estimated serial time is at least
    ``min_us`` (default ``PARALLEL_MIN_US``) and the pool has more than one thread (``cores``)."""
    if cores <= 1:
        return False
    return serial_us(family, stored, tokens, rows, cols) >= (PARALLEL_MIN_US if min_us is None else min_us)


def pool_threads() -> int:
    """Threads of TVM's pool in this process. Not always the target's ``num-cores``: without
    ``TVM_NUM_THREADS`` TVM halves ``hardware_concurrency`` on x86 (it assumes SMT), so on the
    2-vCPU VM the pool has ONE thread and a parallel loop is pure overhead."""
    import tvm_ffi
    import tvm  # noqa: F401  (registers the runtime functions)

    f = tvm_ffi.get_global_func("runtime.NumThreads", True)
    try:
        return max(1, int(f())) if f is not None else 1
    except Exception:  # noqa: BLE001
        return 1


def target_cores(target) -> int:
    """Threads a parallel loop of a kernel for ``target`` gets here: the target's ``num-cores``,
    at most the pool's threads."""
    try:
        cores = int(target.attrs["num-cores"])
    except (KeyError, TypeError, ValueError, AttributeError):
        cores = 1
    return min(cores, pool_threads())


def resolve_parallel(weight, tokens: int, knobs: dict | None, target) -> dict:
    """``knobs`` with ``parallel`` resolved by the rule (from a format object's stored entries,
    or a meta's ``rows x cols``) when it is absent or ``None``."""
    from sparsec.backends.kernels.common import WeightMeta

    knobs = dict(knobs or {})
    if knobs.get("parallel") is None:
        if isinstance(weight, WeightMeta):
            name, stored = weight.format, int(weight.rows) * int(weight.cols)
        else:
            name, stored = weight.name, stored_entries(weight)
        knobs["parallel"] = parallel_default(name, stored, int(tokens), target_cores(target),
                                             int(weight.rows), int(weight.cols))
    return knobs


def resolve_in_plan(meta, spec, knobs: dict, target=None) -> None:
    """For the families' ``resolve_knobs``: a ``parallel`` still ``None`` (only a meta was
    given) resolved with the matrix as the bound on the stored entries, in place."""
    if knobs.get("parallel", True) is None:
        cores = target_cores(target) if target is not None else _host_cores()
        knobs["parallel"] = parallel_default(meta.format, int(meta.rows) * int(meta.cols), spec.tokens, cores,
                                             int(meta.rows), int(meta.cols))


def _host_cores() -> int:
    from sparsec.backends.target import num_threads
    return min(num_threads(), pool_threads())


__all__ = ["IM2COL_NS", "im2col_parallel", "POOL_WAKE_US", "PARALLEL_SPEEDUP", "PARALLEL_MIN_US", "SERIAL_NS", "stored_entries", "serial_us",
           "parallel_default", "resolve_parallel", "resolve_in_plan", "target_cores"]
