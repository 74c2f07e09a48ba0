"""Guest instructions a kernel executes under qemu-user (``-d in_asm,exec,nochain``; Debian's
qemu has no TCG plugins): the ground truth the llvm-mca ranking is checked against on small cases.

Each executed translation block is logged; its instruction count comes from
the ``in_asm`` listing; only blocks inside the kernel object's functions
(their addresses in the static driver, from ``nm``) are counted, so libc
start-up and the driver's copies are left out.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import torch

from sparsec.ir.errors import ModelError

_IN = re.compile(r"^0x([0-9a-f]+):\s")
_TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")


def _symbols(nm: str, path: str) -> dict[str, tuple[int, int]]:
    out = {}
    r = subprocess.run([nm, "-S", "--defined-only", path], capture_output=True, text=True, check=True)
    for ln in r.stdout.splitlines():
        p = ln.split()
        if len(p) == 4 and p[2] in "TtW":
            out[p[3]] = (int(p[0], 16), int(p[1], 16))
    return out


def kernel_instructions(weight, tokens: int, cpu: str | None = None, seed: int = 0) -> int:
    """Guest instructions executed inside the kernel for ``weight`` x ``XT[K, tokens]``."""
    from sparsec.backends.arm.cdriver import write_c_driver
    from sparsec.backends.arm.kernels import kernel_module, one_step_plan
    from sparsec.backends.arm.qemu import run_qemu, tool

    nm = tool("aarch64-linux-gnu-nm", "binutils-aarch64-linux-gnu")
    mod, name, args, _ = kernel_module(weight, tokens, cpu=cpu)
    plan, consts = one_step_plan(weight, args, name)
    folder = tempfile.mkdtemp(prefix="sparsec-count-")
    try:
        write_c_driver(folder, mod, plan, consts)
        kernel_syms = set(_symbols(nm, os.path.join(folder, "kernels.o")))
        # the kernel object's code is one span in the executable (its parallel lambdas have no symbol)
        spans = [v for k, v in _symbols(nm, os.path.join(folder, "model")).items() if k in kernel_syms]
        ranges = [(min(a for a, _ in spans), max(a + n for a, n in spans) - min(a for a, _ in spans))]
        x = torch.randn(weight.cols, tokens, generator=torch.Generator().manual_seed(seed)).to(
            getattr(torch, plan["inputs"][0]["dtype"]))
        x.numpy().tofile(os.path.join(folder, "x.bin"))
        log = os.path.join(folder, "qemu.log")
        r = run_qemu(["-d", "in_asm,exec,nochain", "-D", log, os.path.join(folder, "model"),
                      os.path.join(folder, "weights.bin"), os.path.join(folder, "x.bin"),
                      os.path.join(folder, "y.bin")], timeout=600)
        if r.returncode != 0:
            raise ModelError(f"qemu instruction count of {name} failed: {r.stderr[-800:]}")
        sizes, cur, total = {}, None, 0
        with open(log) as f:
            for ln in f:
                m = _IN.match(ln)
                if m:
                    pc = int(m.group(1), 16)
                    if cur is None:
                        cur = pc
                        sizes[cur] = 0
                    sizes[cur] += 1
                    continue
                if not ln.strip() or ln.startswith("----") or ln.startswith("IN:"):
                    if ln.startswith("IN:") or ln.startswith("----"):
                        cur = None
                    continue
                m = _TRACE.match(ln)
                if m:
                    pc = int(m.group(1), 16)
                    if any(a <= pc < a + s for a, s in ranges):
                        total += sizes.get(pc, 0)
        return total
    finally:
        shutil.rmtree(folder, ignore_errors=True)
