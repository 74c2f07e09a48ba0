"""Target descriptions for the analytic cost model.

Numbers are per machine: cores, SIMD width (fp32 lanes), FMA units per core,
clock, and bandwidth per memory level. ``host_desc()`` reads this machine
(cores, AVX width from /proc/cpuinfo); clock and bandwidths are documented
assumptions unless calibrated (``sparsec calibrate`` measures kernels and fits
the model's coefficients, which then dominate these defaults).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TargetDesc:
    name: str
    cores: int
    simd_lanes: int            # fp32 lanes per vector register
    fma_units: int             # vector FMA pipes per core
    ghz: float
    l1_kb: int
    l2_kb: int
    llc_mb: float
    bw_l2_gbs: float           # per core
    bw_llc_gbs: float          # whole chip
    bw_dram_gbs: float         # whole chip
    launch_us: float = 2.0     # fixed cost of one kernel call

    @property
    def peak_flops(self) -> float:
        """fp32 FLOP/s: cores x lanes x FMA pipes x 2 x clock."""
        return self.cores * self.simd_lanes * self.fma_units * 2 * self.ghz * 1e9

    def mem_bw(self, nbytes: int) -> float:
        """Bandwidth (bytes/s) of the level a working set of ``nbytes`` streams from."""
        if nbytes <= self.l2_kb * 1024 * self.cores:
            return self.bw_l2_gbs * self.cores * 1e9
        if nbytes <= self.llc_mb * 1024 * 1024:
            return self.bw_llc_gbs * 1e9
        return self.bw_dram_gbs * 1e9


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") or line.startswith("Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def host_desc(threads: int | None = None) -> TargetDesc:
    """This machine (x86 or aarch64): cores from the usable CPUs, lanes from the ISA flags."""
    flags = _cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    # clock and bandwidths: assumptions for a server core (calibration corrects them)
    return TargetDesc("host", threads, lanes, 2, 2.5, 32, 1024, 32.0, 64.0, 200.0, 40.0)


# Documented reference targets (public spec figures, rounded).
TARGETS = {
    # Neoverse-N1: 4 x 128-bit NEON, 2 FMA pipes, ~3 GHz; per-core 1 MB L2
    "neoverse-n1": TargetDesc("neoverse-n1", 4, 4, 2, 3.0, 64, 1024, 32.0, 50.0, 150.0, 25.0),
    # Cortex-A76 (phone big core cluster of 4)
    "cortex-a76": TargetDesc("cortex-a76", 4, 4, 2, 2.8, 64, 512, 4.0, 40.0, 80.0, 15.0),
    # H100 SXM: 132 SMs; fp32 CUDA-core peak ~67 TFLOP/s modelled as 132 x 128 lanes x 1 x 2 x 1.98 GHz;
    # HBM3 3.35 TB/s, 50 MB L2
    "h100": TargetDesc("h100", 132, 128, 1, 1.98, 256, 0, 50.0, 0.0, 7000.0, 3350.0, launch_us=4.0),
}
