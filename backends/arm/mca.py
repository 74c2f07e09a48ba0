"""A static estimate of kernel time on an aarch64 core, from llvm-mca on the generated hot loop.

For one kernel (format, shape, tokens, core):

1. build it for ``arm_target(cpu)`` and read its assembly;
2. take the *work loop*: of the innermost loops, the one with the most
   multiply-add lanes (``fmla vN.4s`` counts 4, ``fmadd`` 1);
3. run ``llvm-mca-19 -mcpu=<cpu>`` on that loop body (steady state, L1 hits):
   ``cycles_per_iter`` = total cycles / iterations;
4. trip count = the multiply-adds the format makes the kernel do
   (``work_macs``: stored slots x tokens — nnz for CSR/Bitmap, every slot
   incl. padding for N:M, whole blocks for BSR, kept groups for GroupQuant,
   O x K for dense) / multiply-adds per iteration;
5. ``cycles = trips x cycles_per_iter``.

What it leaves out, on purpose (documented in docs/arm.md): loop set-up
outside the work loop, token tails, the epilogue, cache and TLB misses
(llvm-mca assumes every load hits L1) and threads. It is a compute/issue
bound for one core; its use is to *rank* formats for one shape on one core.
llvm-mca 19 has Neoverse-N1 and Cortex-A76/A55 scheduling models (14 maps
N1/A76 to the Cortex-A57 model, hence the llvm-19 package).
"""
from __future__ import annotations

import functools
import math
import re
import subprocess
from dataclasses import asdict, dataclass

from sparsec.backends.arm.asm import hot_loops, kernel_asm
from sparsec.backends.arm.target import cpu_info
from sparsec.ir.errors import ModelError

MCA = ("llvm-mca-19", "llvm-19")
ITERATIONS = 200
_SCALAR_FMA = re.compile(r"^\s*f(n)?m(add|sub)\s+[sdh]\d+")
_VEC_FMA = re.compile(r"^\s*fml[as]\s+v\d+\.(\d+)[shd]\b")


@dataclass(frozen=True)
class Estimate:
    format: str
    cpu: str
    tokens: int
    work_macs: int          # multiply-adds the kernel performs (format-stored slots x tokens)
    macs_per_iter: int      # in the work loop
    loop_insns: int
    cycles_per_iter: float  # llvm-mca steady state
    trips: float
    cycles: float
    knobs: dict

    def as_dict(self) -> dict:
        return asdict(self)


def mac_lanes(body) -> int:
    n = 0
    for ln in body:
        m = _VEC_FMA.match(ln)
        if m:
            n += int(m.group(1))
        elif _SCALAR_FMA.match(ln):
            n += 1
    return n


def work_loop(asm: str):
    loops = [lp for lp in hot_loops(asm) if mac_lanes(lp.body) > 0]
    if not loops:
        raise ModelError("mca: no loop with multiply-adds in the kernel's assembly")
    return max(loops, key=lambda lp: mac_lanes(lp.body))


def loop_instructions(body) -> list[str]:
    """The instructions of a loop body (labels, directives and comments dropped)."""
    out = []
    for ln in body:
        s = ln.split("//")[0].strip()
        if not s or s.endswith(":") or s.startswith("."):
            continue
        out.append(s)
    return out


@functools.lru_cache(maxsize=4096)
def mca_cycles_per_iter(insns: tuple, cpu: str) -> float:
    from sparsec.backends.arm.qemu import tool

    exe = tool(*MCA)
    r = subprocess.run([exe, "-mtriple=aarch64-linux-gnu", f"-mcpu={cpu}", f"-iterations={ITERATIONS}"],
                       input="\n".join(insns) + "\n", capture_output=True, text=True, timeout=120)
    m = re.search(r"Total Cycles:\s+(\d+)", r.stdout)
    if r.returncode != 0 or not m:
        raise ModelError(f"llvm-mca on the work loop ({cpu}) failed: {r.stderr.strip()[-800:]}")
    return int(m.group(1)) / ITERATIONS


def work_macs(weight, tokens: int) -> int:
    """Multiply-adds the format's kernel performs for ``tokens`` (padding slots included)."""
    name = weight.name
    if name == "dense":
        n = weight.rows * weight.cols
    elif name == "csr":
        n = int(weight.values.numel())
    elif name == "bitmap":
        n = int(weight.values.numel())
    elif name == "nm":
        n = int(weight.values.numel())
    elif name == "bsr":
        n = int(weight.blocks.numel())
    elif name == "groupquant":
        n = int(weight.group_idx.numel()) * int(weight.group)
    else:
        raise ModelError(f"mca: no work model for format {name!r}")
    return n * int(tokens)


@functools.lru_cache(maxsize=2048)
def loop_model(meta, tokens: int, cpu: str, knobs: tuple = ()) -> tuple[int, int, float, dict]:
    """(multiply-adds per work-loop iteration, its instructions, llvm-mca cycles per iteration, knobs)
    for a kernel meta (values do not matter: nnz-sized buffers are symbolic)."""
    from sparsec.backends.arm.kernels import kernel_module

    mod, name, _, resolved = kernel_module(meta, tokens, cpu=cpu, knobs=dict(knobs))
    loop = work_loop(kernel_asm(mod, name))
    insns = tuple(loop_instructions(loop.body))
    return mac_lanes(loop.body), len(insns), mca_cycles_per_iter(insns, cpu), resolved


def estimate(weight, tokens: int, cpu: str | None = None, knobs: dict | None = None) -> Estimate:
    """The static estimate for ``weight`` (a format object) times ``XT[K, tokens]`` on ``cpu``."""
    from sparsec.backends.kernels.common import meta_of

    cpu = cpu_info(cpu).name
    per, n_insns, cpi, resolved = loop_model(meta_of(weight), int(tokens), cpu, tuple(sorted((knobs or {}).items())))
    macs = work_macs(weight, tokens)
    trips = macs / per
    return Estimate(weight.name, cpu, int(tokens), macs, per, n_insns, cpi, trips, trips * cpi, dict(resolved))


def rank(candidates: dict, tokens: int, cpu: str | None = None) -> list[tuple[str, float]]:
    """``candidates``: label -> format object of one weight; labels sorted by estimated cycles."""
    est = {label: estimate(w, tokens, cpu).cycles for label, w in candidates.items()}
    return sorted(est.items(), key=lambda kv: kv[1])
