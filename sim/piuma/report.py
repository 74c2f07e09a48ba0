"""Results of a simulation: counters, JSON, a table, plots."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import scipy.sparse as sp


@dataclass
class SimResult:
    algo: str
    cycles: float
    seconds: float
    analytic_cycles: float
    stage_cycles: dict
    counters: dict
    utilisation: dict
    shape: dict
    wall_s: float
    C: sp.csr_matrix = field(repr=False, default=None)
    cpu_s: float = 0.0          # CPU time of this process (less sensitive to other load)

    @classmethod
    def build(cls, *, algo, cfg, ops, C, timing, counters, machine, analytic_cycles, wall_s,
              cpu_s=0.0):
        words = counters.get("dram_read_words", 0.0) + counters.get("dram_write_words", 0.0)
        cnt = dict(counters)
        cnt["dram_accesses"] = words
        cnt["dram_bytes"] = words * cfg.dram.access_bytes
        cnt["dram_read_bytes"] = counters.get("dram_read_words", 0.0) * cfg.dram.access_bytes
        cnt["dram_write_bytes"] = counters.get("dram_write_words", 0.0) * cfg.dram.access_bytes
        cnt["spm_peak_bytes"] = timing.get("spm_peak_bytes", 0.0)
        cnt["spm_mean_bytes"] = timing.get("spm_mean_bytes", 0.0)
        util = machine.counters(timing["cycles"])
        util["thread_utilisation"] = float(timing["thread_utilisation"])
        shape = {"A": list(ops.A.shape), "B": list(ops.B.shape), "nnz_A": int(ops.A.nnz),
                 "nnz_B": int(ops.B.nnz), "nnz_C": int(C.nnz), "flops": int(ops.flops),
                 "cores": cfg.core.count, "threads_per_core": cfg.core.threads}
        return cls(algo=algo, cycles=float(timing["cycles"]),
                   seconds=timing["cycles"] / (cfg.clock_ghz * 1e9),
                   analytic_cycles=float(analytic_cycles), stage_cycles=timing["stage_cycles"],
                   counters=cnt, utilisation=util, shape=shape, wall_s=wall_s, C=C,
                   cpu_s=cpu_s)

    def to_dict(self) -> dict:
        return {"algo": self.algo, "cycles": self.cycles, "seconds": self.seconds,
                "analytic_cycles": self.analytic_cycles, "stage_cycles": self.stage_cycles,
                "counters": self.counters, "utilisation": self.utilisation,
                "shape": self.shape, "sim_wall_s": self.wall_s,
                "sim_cpu_s": self.cpu_s}


def comparison(results: dict[str, SimResult]) -> dict:
    """JSON-ready comparison: every result plus speedups over the slowest."""
    slowest = max(r.cycles for r in results.values())
    return {"results": {k: r.to_dict() for k, r in results.items()},
            "speedup_vs_slowest": {k: slowest / r.cycles for k, r in results.items()}}


def print_table(results: dict[str, SimResult], file=None) -> None:
    from rich.console import Console
    from rich.table import Table
    any_r = next(iter(results.values()))
    s = any_r.shape
    t = Table(title=f"PIUMA SpGEMM  A {s['A'][0]}x{s['A'][1]} nnz {s['nnz_A']}  "
                    f"B nnz {s['nnz_B']}  C nnz {s['nnz_C']}  flops {s['flops']}  "
                    f"{s['cores']} cores x {s['threads_per_core']} threads")
    for col in ("algo", "cycles", "analytic", "DRAM MB", "DRAM acc", "atomics", "collisions",
                "SPM peak KB", "thread util", "pipe util", "DRAM util", "sim s"):
        t.add_column(col, justify="right")
    best = min(r.cycles for r in results.values())
    for name, r in results.items():
        c = r.counters
        t.add_row(name + (" *" if r.cycles == best else ""), f"{r.cycles:,.0f}",
                  f"{r.analytic_cycles:,.0f}", f"{c['dram_bytes'] / 1e6:.2f}",
                  f"{c['dram_accesses']:,.0f}", f"{c.get('atomics', 0):,.0f}",
                  f"{c.get('collisions', 0):,.0f}", f"{c['spm_peak_bytes'] / 1024:.1f}",
                  f"{r.utilisation['thread_utilisation']:.2f}",
                  f"{r.utilisation['pipeline_utilisation']:.2f}",
                  f"{r.utilisation['dram_utilisation']:.2f}", f"{r.wall_s:.2f}")
    Console(file=file, width=200).print(t)


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, mode) as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)            # mkstemp creates 0600; results are shared files
    os.replace(tmp, path)


def write_json(path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_figure(fig, path) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    import io
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    write_atomic(path, buf.getvalue())


def plot_comparison(results: dict[str, SimResult], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(results)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].bar(names, [results[n].cycles for n in names], color="tab:blue")
    ax[0].set_yscale("log")
    ax[0].set_ylabel("cycles")
    ax[0].set_title("simulated cycles")
    ax[1].bar(names, [results[n].counters["dram_bytes"] / 1e6 for n in names], color="tab:orange")
    ax[1].set_ylabel("DRAM MB")
    ax[1].set_title("DRAM traffic")
    save_figure(fig, path)
    plt.close(fig)
