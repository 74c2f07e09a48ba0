"""The host tools of the aarch64 backend (cross gcc, qemu-aarch64, llvm-mca) and runs under qemu-user."""
from __future__ import annotations

import os
import shutil
import subprocess

from sparsec.ir.errors import ConfigError

SYSROOT = "/usr/aarch64-linux-gnu"


def tool(command: str, package: str) -> str:
    """Path of ``command``; a ConfigError naming the Debian package when it is missing."""
    path = shutil.which(command)
    if path is None:
        raise ConfigError(f"{command} not found: install the Debian package {package} "
                          f"(`bash scripts/sysdeps.sh` does, as root)")
    return path


def qemu() -> str:
    return tool("qemu-aarch64", "qemu-user")


def run_qemu(argv: list[str], cwd: str | None = None, env: dict | None = None, timeout: float = 600,
             cpu: str = "max", plugin: str | None = None) -> subprocess.CompletedProcess:
    """Run an aarch64 program under qemu-user (dynamic ones find their libc under the cross sysroot)."""
    cmd = [qemu(), "-cpu", cpu, "-L", SYSROOT]   # options first; argv may start with more (-d, -D)
    for k, v in (env or {}).items():
        cmd += ["-E", f"{k}={v}"]
    if plugin:
        cmd += ["-plugin", plugin, "-d", "plugin"]
    r = subprocess.run(cmd + list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return r


def cross_compiler():
    """The ``fcompile`` for ``export_library`` (aarch64-linux-gnu-gcc)."""
    from tvm.support import cc

    tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    return cc.cross_compiler("aarch64-linux-gnu-gcc")


def have_tools() -> bool:
    return all(shutil.which(c) for c in ("aarch64-linux-gnu-gcc", "qemu-aarch64")) and os.path.isdir(SYSROOT)
