"""Host target detection for the LLVM CPU backend.

``host_target()`` is the TVM target kernels are built for when nothing else is
asked: ``{"kind": "llvm", "mcpu": <host cpu>, "num-cores": <threads>}``, with
the host triple spelled out (the wheel's default triple is a conda one).
The thread count is ``TVM_NUM_THREADS`` when set, else the CPUs this process
may run on; benchmarks give torch the same number.
"""
from __future__ import annotations

import functools
import os
import platform

from sparsec.ir.errors import ParameterError


@functools.lru_cache(maxsize=None)
def host_cpu() -> str:
    """LLVM's name for the host CPU (e.g. ``znver5``)."""
    import tvm_ffi
    import tvm  # noqa: F401  (registers the llvm global functions)

    return str(tvm_ffi.get_global_func("target.llvm_get_system_cpu")())


def host_triple() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64-linux-gnu"
    if machine in ("aarch64", "arm64"):
        return "aarch64-linux-gnu"
    return f"{machine}-linux-gnu"


def num_threads() -> int:
    """Threads TVM's pool uses: ``TVM_NUM_THREADS`` or the usable CPUs."""
    env = os.environ.get("TVM_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ParameterError(f"TVM_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ParameterError(f"TVM_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_target(num_cores: int | None = None):
    """The LLVM target for this machine (CPU model, triple, thread count)."""
    import tvm

    cores = num_threads() if num_cores is None else int(num_cores)
    if cores < 1:
        raise ParameterError(f"host_target: num_cores must be >= 1, got {num_cores}")
    return tvm.target.Target({"kind": "llvm", "mtriple": host_triple(), "mcpu": host_cpu(),
                              "num-cores": cores})


def vector_bits(target) -> int:
    """SIMD register width in bits LLVM will use for ``target`` (512 with AVX-512, 128 on NEON)."""
    import tvm_ffi

    return int(tvm_ffi.get_global_func("target.llvm_get_vector_width")(target))


def cpu_model() -> str:
    """Marketing name of the host CPU, for benchmark reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
