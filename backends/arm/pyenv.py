"""The Python route on emulated aarch64: Debian arm64 CPython 3.11 + TVM runtime bundle + numpy.

``ensure_pyenv()`` builds it once with ``make_pyenv.sh`` into
``$SPARSEC_CACHE_DIR/arm-python`` (default ``~/.cache/sparsec``; downloads
from Debian and PyPI, a few minutes) and reuses it afterwards.
``run_artifact_tvm(path, inputs)`` runs an artifact's ``run_on_device.py``
(TVM runtime + numpy only) under qemu-aarch64 and returns the outputs.
"""
from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np

from sparsec.ir.errors import ConfigError, ModelError


def cache_dir() -> str:
    base = os.environ.get("SPARSEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sparsec")
    return os.path.join(base, "arm-python")


def ensure_pyenv(timeout: float = 1800) -> str:
    d = cache_dir()
    if os.path.isfile(os.path.join(d, ".complete")):
        return d
    script = os.path.join(os.path.dirname(__file__), "make_pyenv.sh")
    r = subprocess.run(["bash", script, d], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or not os.path.isfile(os.path.join(d, ".complete")):
        raise ConfigError(f"{script}: could not build the aarch64 Python environment in {d}: "
                          f"{(r.stderr or r.stdout).strip()[-1500:]}")
    return d


def run_artifact_tvm(path: str, inputs, timeout: float = 900) -> list[np.ndarray]:
    """Outputs of artifact ``path`` on ``inputs`` (numpy or torch), run by the aarch64 TVM runtime under qemu."""
    from sparsec.backends.arm.qemu import run_qemu

    env_dir = ensure_pyenv()
    root = os.path.join(env_dir, "root")
    with tempfile.TemporaryDirectory(prefix="sparsec-a64py-") as io:
        ins = []
        for k, x in enumerate(inputs):
            a = x.detach().contiguous().numpy() if hasattr(x, "detach") else np.ascontiguousarray(x)
            p = os.path.join(io, f"in{k}.npy")
            np.save(p, a)
            ins.append(p)
        env = {"LD_LIBRARY_PATH": f"{root}/usr/lib/aarch64-linux-gnu:{root}/lib/aarch64-linux-gnu",
               "PYTHONHOME": f"{root}/usr", "PYTHONPATH": f"{env_dir}/bundle:{env_dir}/site",
               "TVM_USE_RUNTIME_LIB": "1", "TVM_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        r = run_qemu([f"{root}/usr/bin/python3.11", os.path.join(path, "run_on_device.py"), path, *ins,
                      "-o", os.path.join(io, "out")], env=env, timeout=timeout)
        if r.returncode != 0:
            raise ModelError(f"{path}: run_on_device.py under qemu-aarch64 exited {r.returncode}: "
                             f"{(r.stderr or r.stdout).strip()[-2000:]}")
        n = len([f for f in os.listdir(os.path.join(io, "out")) if f.startswith("out")])
        return [np.load(os.path.join(io, "out", f"out{i}.npy")) for i in range(n)]
