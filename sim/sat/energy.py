"""Energy from a per-operation table (``[energy]`` in the config, picojoules).

    E = MACs·mac_dense + sparse MACs·select + SRAM bytes·sram_byte
        + DRAM bytes·dram_byte + pruned groups·prune_group + cycles·static_pj_per_cycle

Defaults are 45 nm-class figures (Horowitz, ISSCC 2014: 16-bit FP multiply
~1.1 pJ, add ~0.4 pJ, 8 KB SRAM 64-bit read ~10 pJ, DRAM ~1.3-2.6 nJ per 64
bits) with DRAM set at DDR4's ~10 pJ/bit; the static term is an FPGA's
~2 W of static and clock power. They are an assumption for comparing dense
and sparse runs of the same design, not a measurement of the VCU1525.
"""
from __future__ import annotations


def energy_pj(cfg, macs: int, sparse_macs: int, sram_bytes: int, dram_bytes: int,
              prune_groups: int, cycles: int) -> dict:
    e = cfg.energy
    parts = {
        "mac": macs * e.mac_dense,
        "select": sparse_macs * e.select,
        "sram": sram_bytes * e.sram_byte,
        "dram": dram_bytes * e.dram_byte,
        "prune": prune_groups * e.prune_group,
        "static": cycles * e.static_pj_per_cycle,
    }
    parts["total"] = sum(parts.values())
    return parts
