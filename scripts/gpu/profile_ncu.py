"""Nsight Compute counters for a few bench kernels (development: where does the time go?).

usage (GPU machine, runtime only):
    ncu --csv -k regex:'^b_' --metrics <list> python3 scripts/gpu/profile_ncu.py KDIR
    (``python3 scripts/gpu/profile_ncu.py KDIR --ncu OUT.csv`` runs that ncu command itself)
Runs, once each, on the 9216x36864 LLM shape: the tiled kernel (pos7, default knobs) at 70 % for T = 1 and 32,
the dense wgmma GEMM and the 2:4 wgmma.sp GEMM at T = 1024 (kernels of ``build_kernels.py``'s bench.so).
``PROF_SET=wg``: instead the ``mma="wg"`` tiled variants of 4096x11008 at T = 16 and 32, at 70 % and 90 %, with
Nsight Compute's sections (``--ncu`` then passes ``SECTIONS`` instead of ``--metrics``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

O, K = 9216, 36864
METRICS = ",".join([
    "gpu__time_duration.sum", "dram__bytes_read.sum", "lts__t_bytes.sum",
    "l1tex__t_bytes_pipe_lsu_mem_global_op_ld.sum", "l1tex__t_sector_hit_rate.pct",
    "lts__t_sector_hit_rate.pct", "sm__inst_executed.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed", "lts__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed",
    "smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio",
    "smsp__average_warp_latency_issue_stalled_barrier.ratio",
])
SECTIONS = ["SpeedOfLight", "MemoryWorkloadAnalysis", "MemoryWorkloadAnalysis_Tables", "WarpStateStats",
            "Occupancy", "LaunchStats", "SchedulerStats", "ComputeWorkloadAnalysis"]
SET = os.environ.get("PROF_SET", "")


def main_wg(kdir):
    """Each ``mma="wg"`` tiled bench kernel of 4096x11008 at T = 16 / 32 once, at 70 % and 90 %."""
    import env
    import torch

    from sparsec.backends.cuda.kernels import tiled_layout
    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import Bitmap

    dev = torch.device("cuda")
    o, k = 4096, 11008
    cases = json.load(open(os.path.join(kdir, "cases.json")))["bench"]
    lib = load_library(os.path.join(kdir, "bench.so"))
    torch.manual_seed(0)
    w = torch.randn(o, k, device=dev, dtype=torch.float16) / k ** 0.5
    for sp in (0.7, 0.9):
        bm = Bitmap.from_dense((w * (torch.rand(o, k, device=dev) >= sp)).cpu(), tile=(8, 32))
        for c in cases:
            kn = c["resolved_knobs"]
            if not (c["name"].startswith("b_tiled") and (c["O"], c["K"]) == (o, k) and c["T"] in (16, 32)
                    and kn.get("mma") == "wg" and re.search(os.environ.get("PROF_KERNELS", ""), c["name"])
                    and str(sp) in os.environ.get("PROF_SPARSITY", "0.7,0.9")):
                continue
            lay, names = tiled_layout.build_for(bm, kn)
            x = torch.randn(c["T"], k, device=dev, dtype=torch.float16)
            y = torch.empty(c["T"], o, device=dev, dtype=torch.float16)
            lib[c["name"]](*[lay[n].to(dev) for n in names], x, y)
            torch.cuda.synchronize()
            print("ran", sp, c["name"], kn, flush=True)
    print(env.machine_info()["gpu"], flush=True)


def main(kdir):
    import env
    import torch

    from sparsec.backends.cuda.kernels import mma_layout, tiled_layout
    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import NM, Bitmap

    dev = torch.device("cuda")
    cases = json.load(open(os.path.join(kdir, "cases.json")))["bench"]
    lib = load_library(os.path.join(kdir, "bench.so"))
    torch.manual_seed(0)
    w = torch.randn(O, K, device=dev, dtype=torch.float16) / K ** 0.5
    w70 = w * (torch.rand(O, K, device=dev) >= 0.7)
    bm = Bitmap.from_dense(w70.cpu(), tile=(8, 32))
    for T in (1, 32):
        c = next(c for c in cases if c["name"].startswith("b_tiled") and (c["O"], c["K"], c["T"]) == (O, K, T)
                 and c["resolved_knobs"].get("code") == "pos7")          # the first pos7 variant: default split
        lay, names = tiled_layout.build_for(bm, c["resolved_knobs"])
        x = torch.randn(T, K, device=dev, dtype=torch.float16)
        y = torch.empty(T, O, device=dev, dtype=torch.float16)
        lib[c["name"]](*[lay[n].to(dev) for n in names], x, y)
        print("ran", c["name"], c["resolved_knobs"], flush=True)
    T = 1024
    x = torch.randn(T, K, device=dev, dtype=torch.float16)
    y = torch.empty(T, O, device=dev, dtype=torch.float16)
    lib[f"b_wgdense_{O}x{K}x{T}"](w, x, y)
    g = w.view(O, K // 4, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().argsort(-1, descending=True)[..., :2], True)
    lay = mma_layout.build(NM.from_dense((g * keep).view(O, K), n=2, m=4))
    lib[f"b_wgnm24_{O}x{K}x{T}"](lay["sp_values"], lay["sp_meta"], x, y)
    torch.cuda.synchronize()
    print("ran wgmma dense + 2:4 at T=1024", env.machine_info()["gpu"], flush=True)


if __name__ == "__main__":
    if "--ncu" in sys.argv:
        out = sys.argv[sys.argv.index("--ncu") + 1]
        what = ["--metrics", METRICS] if SET != "wg" else [a for n in SECTIONS for a in ("--section", n)]
        if os.environ.get("PROF_METRICS"):          # e.g. breakdown:l1tex__throughput.avg.pct_of_peak_sustained_elapsed
            what = ["--metrics", os.environ["PROF_METRICS"]]
        cmd = ["ncu", "--csv", "-k", "regex:" + os.environ.get("PROF_KERNELS", "^b_"), *what, sys.executable,
               os.path.abspath(__file__), sys.argv[1]]
        with open(out, "w") as f:
            sys.exit(subprocess.run(cmd, stdout=f).returncode)
    main_wg(sys.argv[1]) if SET == "wg" else main(sys.argv[1])
