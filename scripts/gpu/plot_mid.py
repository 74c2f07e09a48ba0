"""Plot of ``DEV_WGSP_MODE=mid scripts/gpu/dev_wgsp.py`` (dense ``wgmma`` at 192-512 tokens, session 13): per shape,
x cuBLAS of the old default (no split under one wave), of what ``default_knobs`` picks now, and of the fastest
variant timed, all from one run.

usage: python scripts/gpu/plot_mid.py benchmarks/results/dev/mid_run1.json OUT.png
"""
from __future__ import annotations

import json
import sys


def picks(res: dict) -> list[dict]:
    """Per (O, K, T): cuBLAS ms and the ratios of the old default (variant 0: the kernel's defaults when the run was
    built), the current default (the timed variant whose knobs match ``default_knobs``) and the fastest variant."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import default_knobs

    out = []
    for r in res["bench"]:
        dense = [k for k in r["kernels"] if k["format"] == "dense" and k["ok"]]
        if not dense:
            continue
        kn = default_knobs(r["O"], r["K"], r["T"])
        want = {a: kn[a] for a in ("bm", "bn", "ks")} | {"sk": kn.get("sk") or None}
        new = [k for k in dense if {a: k["knobs"].get(a) for a in ("bm", "bn", "ks")}
               | {"sk": k["knobs"].get("sk") or None} == want]
        if not new:
            raise SystemExit(f"{r['O']}x{r['K']} T={r['T']}: no timed variant has the default knobs {want}")
        old = next(k for k in dense if k["name"].startswith("b_wgd0_"))
        out.append({"O": r["O"], "K": r["K"], "T": r["T"], "cublas_ms": r["cublas_ms"], "old": old["vs_cublas"],
                    "new": new[0]["vs_cublas"], "best": max(k["vs_cublas"] for k in dense),
                    "new_knobs": {a: new[0]["knobs"].get(a) for a in ("ks", "sk")}})
    return out


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.load(open(sys.argv[1]))
    rows = picks(res)
    shapes = sorted({(r["O"], r["K"]) for r in rows})
    fig, axes = plt.subplots(1, len(shapes), figsize=(4 * len(shapes), 3.4), sharey=True)
    for ax, (O, K) in zip(axes, shapes):
        rs = sorted((r for r in rows if (r["O"], r["K"]) == (O, K)), key=lambda r: r["T"])
        ts = [r["T"] for r in rs]
        for key, style in (("old", "o--"), ("new", "s-"), ("best", "x:")):
            ax.plot(ts, [r[key] for r in rs], style, label={"old": "old default", "new": "default (session 13)",
                                                            "best": "fastest variant"}[key])
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"{O}x{K}")
        ax.set_xlabel("tokens")
    axes[0].set_ylabel("x cuBLAS (fp16)")
    axes[0].legend(fontsize=8)
    m = res["machine"]
    fig.suptitle(f"sparsec dense wgmma under one wave, {m['gpu']} ({m['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    for r in rows:
        print(f"{r['O']}x{r['K']} T={r['T']}: old {r['old']:.2f} new {r['new']:.2f} {r['new_knobs']} "
              f"best {r['best']:.2f} x cuBLAS ({r['cublas_ms'] * 1e3:.1f} us)")


if __name__ == "__main__":
    main()
