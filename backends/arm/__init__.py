"""aarch64 (ARM NEON) backend: cross-compiled kernels, artifacts for the TVM runtime
on aarch64 and a standalone C driver, qemu-user runners, llvm-mca estimates.

- ``target``: ``arm_target(cpu)`` and the CPU table (``--cpu``);
- ``compile``: ``compile_arm(graph, cpu)`` -> ``ArmCompiledGraph`` (reuses the
  LLVM planner with an aarch64 target) and its artifact export;
- ``cdriver``: the generated C driver (``--emit c``) over static buffers;
- ``qemu``: tool discovery and runs under ``qemu-aarch64``;
- ``pyenv``: the cached aarch64 CPython + TVM runtime used for the Python route;
- ``device_runner``: a numpy-only artifact runner for the aarch64 TVM runtime;
- ``mca``: the llvm-mca static estimate of kernel time.
"""
from sparsec.backends.arm.target import CPUS, DEFAULT_CPU, arm_target, cpu_info  # noqa: F401
