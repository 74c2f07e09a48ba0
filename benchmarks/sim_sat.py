"""SAT simulator benchmark: BDWP training speedup, optimisation ablation, simulator speed.

    .venv/bin/python benchmarks/sim_sat.py [--batch 32] [--quick]

Prints (and writes to benchmarks/results/sim_sat.{json,png}):
1. per built-in workload at 2:8 with all optimisations: sparse and dense
   training-step cycles (full step: GEMMs + non-GEMM work + weight update),
   the full-step and the GEMM-only ([step] gemm_only) speedups, the bound
   3/(2N/M+1), utilisation, DRAM, energy, and the cycles per kind of work;
2. the ablation: each optimisation switched off in turn (and all off), the
   average speedup (full step and GEMM-only) and the sparse/dense cycles
   relative to all-on;
3. other patterns (2:4, 1:8) against their bounds;
4. the simulator's own wall time for one ResNet-50 training step (goal < 5 s).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from sparsec.sim.sat import compare, load_config, simulate
from sparsec.sim.sat.cli import plot
from sparsec.sim.sat.pipeline import Opts
from sparsec.sim.sat.simulator import gemm_only
from sparsec.sim.sat.workloads import OPTIMISER, WORKLOADS, builtin

RESULTS = Path(__file__).resolve().parent / "results"
ABLATION = [("all", Opts()), ("no interleave", Opts(False, True, True)), ("no pregen", Opts(True, False, True)),
            ("no offline", Opts(True, True, False)), ("none", Opts(False, False, False))]


def _write(path: Path, data: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="skip the ablation and the other patterns")
    args = ap.parse_args(argv)
    cfg = load_config()
    a = cfg.array
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}")
    print(f"SAT {a.rows}x{a.cols} PEs @ {a.freq_mhz:g} MHz, {cfg.dram.channels} DRAM channels "
          f"({cfg.dram_bytes_per_cycle} B/cycle each), buffers A/B/Out {cfg.buffers.a_kib:g}/"
          f"{cfg.buffers.b_kib:g}/{cfg.buffers.out_kib:g} KiB; batch {args.batch}\n")
    out = {"config": cfg.source, "batch": args.batch, "array": [a.rows, a.cols], "workloads": {},
           "ablation": {}, "patterns": {}}

    # 4. simulator speed first (a cold process is the honest number)
    t0 = time.perf_counter()
    r50 = simulate(builtin("resnet50"), cfg, "2:8", args.batch, Opts(), optimizer=OPTIMISER["resnet50"])
    wall = time.perf_counter() - t0
    steps = len(r50.sequence.comp)
    out["resnet50_sim_wall_s"] = wall
    out["resnet50_steps"] = steps

    # 1. per workload at 2:8, all optimisations
    print("full training step (GEMMs + non-GEMM work + weight update); 'GEMM-only' = [step] gemm_only")
    print(f"{'workload':<10} {'opt':<5} {'sparse cycles':>15} {'dense cycles':>15} {'speedup':>8} {'GEMM-only':>9} "
          f"{'bound':>6} {'util sp/de':>12} {'DRAM GB sp/de':>15} {'energy x':>9}")
    speed, speed_g, kinds = {}, {}, {}
    for w in WORKLOADS:
        r = compare(builtin(w), cfg, "2:8", args.batch, Opts(), optimizer=OPTIMISER[w])
        sp, de = r["sparse"].totals, r["dense"].totals
        speed[w], speed_g[w] = r["speedup"], r["speedup_gemm_only"]
        kinds[w] = (sp["cycles_by_kind"], de["cycles_by_kind"])
        out["workloads"][w] = {"speedup": r["speedup"], "speedup_gemm_only": r["speedup_gemm_only"],
                               "optimizer": OPTIMISER[w], "bound": r["bound"], "energy_ratio": r["energy_ratio"],
                               "sparse": sp, "dense": de}
        print(f"{w:<10} {OPTIMISER[w]:<5} {sp['cycles']:>15,} {de['cycles']:>15,} {r['speedup']:>8.3f} "
              f"{r['speedup_gemm_only']:>9.3f} {r['bound']:>6.2f} "
              f"{sp['utilisation']:>5.1%}/{de['utilisation']:<5.1%} "
              f"{sp['dram_bytes'] / 1e9:>7.2f}/{de['dram_bytes'] / 1e9:<7.2f} {r['energy_ratio']:>9.2f}")
        if w == "resnet50":
            plot(r["sparse"].rows, r["dense"].rows, str(RESULTS / "sim_sat.png"),
                 f"ResNet-50 2:8 BDWP vs dense on SAT (batch {args.batch}, all optimisations)")
    avg = sum(speed.values()) / len(speed)
    avg_g = sum(speed_g.values()) / len(speed_g)
    out["average_speedup"] = avg
    out["average_speedup_gemm_only"] = avg_g
    print(f"{'average':<10} {'':<5} {'':>15} {'':>15} {avg:>8.3f} {avg_g:>9.3f} {2.0:>6.2f}   "
          f"(paper: 1.75x; +-10% window 1.575-1.925)\n")
    print("cycles by kind of work, M (sparse / dense): gemm, matmul (activation x activation), vector, update, pregen")
    for w, (ks, kd) in kinds.items():
        print(f"  {w:<10} " + "  ".join(f"{k} {ks[k] / 1e6:.1f}/{kd[k] / 1e6:.1f}" for k in ks))
    print()

    if not args.quick:
        # 2. ablation
        print("ablation (2:8, full step): average speedup [GEMM-only average], and cycles relative to all-on "
              "(sparse / dense)")
        base = {}
        for label, o in ABLATION:
            sps, sgs, rel_s, rel_d = [], [], [], []
            for w in WORKLOADS:
                r = compare(builtin(w), cfg, "2:8", args.batch, o, optimizer=OPTIMISER[w])
                sgs.append(r["speedup_gemm_only"])
                c_s, c_d = r["sparse"].totals["cycles"], r["dense"].totals["cycles"]
                if label == "all":
                    base[w] = (c_s, c_d)
                sps.append(r["speedup"])
                rel_s.append(c_s / base[w][0])
                rel_d.append(c_d / base[w][1])
            out["ablation"][label] = {"speedups": dict(zip(WORKLOADS, sps)), "average": sum(sps) / len(sps),
                                      "speedups_gemm_only": dict(zip(WORKLOADS, sgs)),
                                      "average_gemm_only": sum(sgs) / len(sgs),
                                      "sparse_cycles_rel": dict(zip(WORKLOADS, rel_s)),
                                      "dense_cycles_rel": dict(zip(WORKLOADS, rel_d))}
            print(f"  {label:<14} avg {sum(sps) / len(sps):.3f} [{sum(sgs) / len(sgs):.3f}]  "
                  + "  ".join(f"{w}:{s:.3f}({rs:.2f}/{rd:.2f})" for w, s, rs, rd in zip(WORKLOADS, sps, rel_s, rel_d)))
        print()
        # 3. other patterns
        for pat in ("2:4", "1:8"):
            rs = {w: compare(builtin(w), cfg, pat, args.batch, Opts(), optimizer=OPTIMISER[w]) for w in WORKLOADS}
            sps = {w: r["speedup"] for w, r in rs.items()}
            sgs = {w: r["speedup_gemm_only"] for w, r in rs.items()}
            from sparsec.sim.sat.report import bound
            n, m = (int(v) for v in pat.split(":"))
            out["patterns"][pat] = {"speedups": sps, "average": sum(sps.values()) / len(sps), "bound": bound(n, m),
                                    "speedups_gemm_only": sgs, "average_gemm_only": sum(sgs.values()) / len(sgs)}
            print(f"pattern {pat}: average speedup {sum(sps.values()) / len(sps):.3f} "
                  f"[GEMM-only {sum(sgs.values()) / len(sgs):.3f}] (bound {bound(n, m):.3f}); "
                  + ", ".join(f"{w} {s:.3f}" for w, s in sps.items()))
        print()

    print(f"simulator speed: ResNet-50 full training step (54 layers x FF/BP/WU + non-GEMM work, {steps:,} steps), "
          f"2:8 all optimisations: {wall:.2f} s wall (goal < 5 s)")
    _write(RESULTS / "sim_sat.json", json.dumps(out, indent=1))
    print(f"wrote {RESULTS / 'sim_sat.json'} and {RESULTS / 'sim_sat.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
