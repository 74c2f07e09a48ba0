"""sparsec: a sparse deep-learning compiler and sparse-accelerator simulator."""

import os as _os

__version__ = "0.1.0"


def cpu_cores(sysfs: str = "/sys/devices/system/cpu") -> int:
    """Physical cores among the CPUs this process may run on: SMT siblings (same package and
    core id in ``sysfs``) count once; the CPU count itself where the topology is unreadable."""
    try:
        cpus = sorted(_os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return _os.cpu_count() or 1
    cores = set()
    for c in cpus:
        try:
            with open(f"{sysfs}/cpu{c}/topology/physical_package_id") as f:
                pkg = f.read().strip()
            with open(f"{sysfs}/cpu{c}/topology/core_id") as f:
                core = f.read().strip()
        except OSError:
            return len(cpus)
        cores.add((pkg, core))
    return max(1, len(cores))


def _size_tvm_pool() -> None:
    """TVM's CPU thread pool reads ``TVM_NUM_THREADS`` once, when it starts; without it TVM takes
    half the logical CPUs on x86 (it assumes two SMT threads per core), so on a VM whose vCPUs are
    cores (2 vCPUs, one thread per core) every ``T.parallel`` loop ran on ONE thread and paid the
    pool's wake-up for nothing. sparsec sizes the pool to the physical cores it may use
    (``cpu_cores``) before anything can start the pool; a user's ``TVM_NUM_THREADS`` wins."""
    if not _os.environ.get("TVM_NUM_THREADS"):
        _os.environ["TVM_NUM_THREADS"] = str(cpu_cores())


_size_tvm_pool()


def load(path):
    """Load a compiled artifact (checks every file's sha256); returns a callable model."""
    from sparsec.backends.artifact import load_artifact

    return load_artifact(path)


def compile(model, example_inputs=None, **options):
    """Compile a model file path or an nn.Module; see `sparsec.api.compile`."""
    from sparsec.api import compile as _compile

    return _compile(model, example_inputs, **options)


def compile_dispatch(model, inputs_list=None, **options):
    """Compile one variant per example-input tuple, dispatched by input shape; see docs/dispatch.md."""
    from sparsec.backends.dispatch import compile_dispatch as _compile_dispatch

    return _compile_dispatch(model, inputs_list, **options)
