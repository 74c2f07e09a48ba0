"""aarch64 Linux targets: one LLVM target per supported core (``--cpu``).

The table names what each core has that the code generator may use (NEON is
always there on aarch64; fp16 arithmetic, the dot-product instructions and
SVE where the core has them) and the llvm-mca model used for its estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsec.ir.errors import ParameterError

TRIPLE = "aarch64-linux-gnu"


@dataclass(frozen=True)
class ArmCPU:
    name: str            # LLVM -mcpu
    kind: str            # server | phone-big | phone-little
    mattr: tuple         # LLVM features beyond the core's defaults (spelled out for the reader)
    doc: str


CPUS: dict[str, ArmCPU] = {c.name: c for c in (
    ArmCPU("neoverse-n1", "server", ("+neon", "+fullfp16", "+dotprod"),
           "Armv8.2 server core (Graviton2, Ampere Altra): 2x128-bit NEON pipes"),
    ArmCPU("neoverse-v1", "server", ("+neon", "+fullfp16", "+dotprod", "+sve"),
           "Armv8.4 server core (Graviton3): 256-bit SVE, 4x128-bit NEON"),
    ArmCPU("cortex-a76", "phone-big", ("+neon", "+fullfp16", "+dotprod"),
           "Armv8.2 phone big core (Snapdragon 855, Raspberry Pi 5): 2x128-bit NEON"),
    ArmCPU("cortex-a55", "phone-little", ("+neon", "+fullfp16", "+dotprod"),
           "Armv8.2 in-order little core: 1x128-bit NEON (64-bit datapath for some ops)"),
    ArmCPU("cortex-a72", "phone-big", ("+neon",),
           "Armv8.0 core (Raspberry Pi 4): NEON, no fp16 arithmetic, no dot product"),
)}
DEFAULT_CPU = "neoverse-n1"


def cpu_info(cpu: str | None) -> ArmCPU:
    cpu = DEFAULT_CPU if cpu is None else cpu
    try:
        return CPUS[cpu]
    except KeyError:
        raise ParameterError(f"--cpu {cpu!r} is not a supported aarch64 core; choose one of "
                             f"{', '.join(CPUS)}") from None


def arm_target(cpu: str | None = None, num_cores: int = 1):
    """The TVM LLVM target for aarch64 Linux with NEON on ``cpu`` (default Neoverse-N1)."""
    import tvm

    info = cpu_info(cpu)
    if int(num_cores) < 1:
        raise ParameterError(f"arm_target: num_cores must be >= 1, got {num_cores}")
    return tvm.target.Target({"kind": "llvm", "mtriple": TRIPLE, "mcpu": info.name,
                              "mattr": list(info.mattr), "num-cores": int(num_cores)})


def is_arm(target) -> bool:
    return str(target.kind.name) == "llvm" and str(target.attrs.get("mtriple", "")).startswith("aarch64")
