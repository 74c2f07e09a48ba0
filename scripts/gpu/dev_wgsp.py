"""Focused build + GPU run of the ``wgmma`` design on 2:4 weights (``wgmma.mma_async.sp``) and on dense weights at
decode token counts, for development (issue #12).

usage (here, TVM + nvcc):   python scripts/gpu/dev_wgsp.py build OUTDIR
      (GPU, runtime only):  python scripts/gpu/dev_wgsp.py run OUTDIR OUTJSON   (``check OUTDIR OUTJSON``: checks only)
Built for ``sm_90a``. ``run`` first checks every check case (``check_cases``: 2:4, odd O/T, bias/activations,
fp16/bf16, split-K, both main loops) vs ``F.linear`` in fp32 in a child process with a time limit (a kernel
waiting forever on an mbarrier must not take the run with it), then per bench cell (shape x tokens) times, in one
process, interleaved (CUDA-graph medians, ``ROUNDS`` rounds): cuBLAS (``F.linear`` fp16 on the pruned dense
weight), cuSPARSELt (``to_sparse_semi_structured``), every 2:4 wgmma variant, and at T <= 32 the dense wgmma
variants; every timed kernel's output is checked against ``F.linear`` in fp32 too.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864)]
TOKENS = [1, 8, 16, 32, 128, 1024]
TOL = {"float16": 1e-2, "bfloat16": 3e-2}
ARCH = "sm_90a"
ROUNDS = 3
NM24 = {"n": 2, "m": 4}
MODE = os.environ.get("DEV_WGSP_MODE", "sp")      # "tma": the producer's cp.async vs TMA (wgsp_tma_run*)
if MODE == "tma":
    TOKENS = [16, 128, 1024]
elif MODE == "big":                                # 2:4 at many tokens: tile shapes with the TMA producer
    TOKENS = [1024] if os.environ.get("DEV_WGSP_BIG") in ("1", "2", "3") else [128, 1024]
elif MODE == "ar":                                 # 2:4 at many tokens: the stored values in registers (ar knob)
    TOKENS = [128, 1024]
elif MODE == "sk3":                                # stream-K with the fixup (sk=3) against sk=2 / plain waves
    TOKENS = [256, 1024]
elif MODE == "mid":                                # dense (and 2:4) between 128 and 1024 tokens: grids under a wave
    TOKENS = [192, 256, 384, 512]
elif MODE == "mid2":                               # the session-13 dense rule on shapes and token counts it was not
    SHAPES = [(5120, 5120), (13824, 5120), (5120, 13824), (8192, 8192), (3072, 768), (768, 3072)]   # written from
    TOKENS = [160, 320, 448, 640]
elif MODE == "bert":                               # sparsec's dense (and 2:4) wgmma on BERT-base's shapes, 8-128 tokens
    SHAPES, TOKENS = [(768, 768), (3072, 768), (768, 3072), (4096, 4096)], [8, 16, 32, 64, 128]
elif MODE == "l2p":                                # the weight's TMA L2 promotion (l2p, session 17), 2:4 and dense
    TOKENS = [32, 128, 1024]
elif MODE == "bert1":                              # the same below 8 tokens
    SHAPES, TOKENS = [(768, 768), (3072, 768), (768, 3072), (4096, 4096)], [1, 2, 4]


def check_cases() -> list[dict]:
    import cases as C

    if MODE == "tma":       # every warp-specialised wgmma check case (dense and 2:4) with tma=1
        return [dict(c, name=c["name"] + "_tma", knobs=dict(c["knobs"], tma=1)) for c in C.wgmma_check_cases()
                if c["knobs"].get("ws", 1) == 1]
    if MODE in ("bert", "bert1"):      # the dense wgmma checks
        return [c for c in C.wgmma_check_cases() if c["format"] == "dense"]
    if MODE == "ar":        # the 2:4 checks, and each with the stored values in registers where the knobs allow it
        base = [c for c in C.wgmma_check_cases() if c["format"] == "nm"]
        extra = [C.case(f"chk_wgar{i}_nm24_{dt}_{O}x{K}x{T}", "nm", NM24, O, K, T, dt, bias, act, ["nm", 2, 4], kn,
                        design="wgmma")
                 for i, (O, K, T, dt, bias, act, kn) in enumerate(AR_CHECKS)]
        return base + extra
    if MODE == "mid2":
        return [c for c in C.wgmma_check_cases() if c["format"] == "dense"]
    if MODE == "l2p":       # the TMA checks (dense and 2:4) with the 256-byte L2 promotion
        return [dict(c, name=c["name"] + "_l2p", knobs=dict(c["knobs"], l2p=3)) for c in C.wgmma_check_cases()
                if c["knobs"].get("ws", 1) == 1 and not c.get("chain")]
    if MODE == "mid":
        return [c for c in C.wgmma_check_cases()] + [
            C.case(f"chk_wgmid_{i}_{fmt}_{dt}_{O}x{K}x{T}", fmt, NM24 if fmt == "nm" else {}, O, K, T, dt, bias,
                   act, ["nm", 2, 4] if fmt == "nm" else ["dense"], kn, design="wgmma")
            for i, (fmt, O, K, T, dt, bias, act, kn) in enumerate(SK3_CHECKS)]
    if MODE == "sk3":       # the stream-K checks of the big mode, and sk=3 on hybrid and all-shared grids
        return [C.case(f"chk_wgsk3_{i}_{fmt}_{dt}_{O}x{K}x{T}", fmt, NM24 if fmt == "nm" else {}, O, K, T, dt, bias,
                       act, ["nm", 2, 4] if fmt == "nm" else ["dense"], kn, design="wgmma")
                for i, (fmt, O, K, T, dt, bias, act, kn) in enumerate(SK3_CHECKS)]
    if MODE == "big":
        extra = [C.case(f"chk_wgbig{i}_nm24_{dt}_{O}x{K}x{T}", "nm", NM24, O, K, T, dt, bias, act, ["nm", 2, 4], kn,
                        design="wgmma")
                 for i, (O, K, T, dt, bias, act, kn) in enumerate(BIG_CHECKS)]
        tail = [C.case(f"chk_wgtail{i}_{fmt}_{dt}_{O}x{K}x{T}", fmt, NM24 if fmt == "nm" else {}, O, K, T, dt, bias,
                       act, ["nm", 2, 4] if fmt == "nm" else ["dense"], kn, design="wgmma")
                for i, (fmt, O, K, T, dt, bias, act, kn) in enumerate(TAIL_CHECKS)]
        return C.wgmma_check_cases() + extra + tail   # dense too: split-K's zero fill changed
    return [c for c in C.wgmma_check_cases() if c["format"] == "nm"]


# tail=N: the tiles past the last full wave split along K (144 tiles: 132 whole + 12 split; < 132 tiles: all split)
TAIL_CHECKS = [("nm", 2000, 512, 1100, "float16", True, None, dict(bm=128, stages=4, tail=3)),
               ("nm", 1160, 1024, 1030, "bfloat16", False, None, dict(bm=256, stages=3, gm=4, tail=5)),
               ("dense", 2001, 1032, 1100, "float16", True, None, dict(bm=128, bn=128, tail=4)),
               ("dense", 4096, 4096, 1024, "float16", False, None, dict(bm=256, bn=128, stages=3, tail=2)),
               # sk=1 (stream-K): 132 blocks share the tile x k-tile space; cut tiles add into zeroed Y
               ("nm", 2000, 768, 1100, "float16", True, None, dict(bm=128, stages=4, sk=1)),
               ("nm", 1160, 1024, 1030, "bfloat16", False, None, dict(bm=256, stages=3, gm=4, sk=1)),
               ("dense", 2001, 1032, 1100, "float16", True, None, dict(bm=128, bn=128, sk=1)),
               ("dense", 300, 520, 77, "float16", True, None, dict(sk=1)),
               ("nm", 11008, 4096, 1024, "float16", False, None, dict(sk=1)),
               # sk=2: whole waves data-parallel, the last partial wave's k-tiles shared (144 tiles: 132 + 12)
               ("nm", 2000, 768, 1100, "float16", True, None, dict(bm=128, stages=4, sk=2)),
               ("dense", 2001, 1032, 1100, "bfloat16", True, None, dict(bm=128, bn=128, sk=2)),
               ("nm", 11008, 4096, 1024, "float16", False, None, dict(sk=2))]
# sk=3: 144 tiles (132 whole + 12 shared), 45 / 128 tiles (all shared), activations (no atomics), bf16, O % 8 != 0
SK3_CHECKS = [("nm", 2000, 768, 1100, "float16", True, None, dict(bm=128, stages=4, sk=3)),
              ("nm", 1160, 1024, 1030, "bfloat16", False, "gelu", dict(bm=256, stages=3, gm=4, sk=3)),
              ("dense", 2001, 1032, 1100, "float16", True, "silu", dict(bm=128, bn=128, sk=3)),
              ("dense", 300, 520, 77, "float16", True, None, dict(sk=3)),
              ("nm", 11008, 4096, 1024, "float16", False, None, dict(sk=3)),
              ("nm", 4096, 4096, 1024, "bfloat16", True, "relu", dict(bm=256, stages=3, gm=4, sk=3)),
              ("dense", 4096, 11008, 1024, "float16", False, None, dict(sk=3)),
              ("nm", 1003, 1152, 200, "float16", True, "gelu", dict(bm=128, bn=64, sk=3)),
              ("nm", 2000, 768, 1100, "float16", True, None, dict(bm=128, stages=4, sk=2)),
              ("dense", 2001, 1032, 1100, "bfloat16", True, None, dict(bm=128, bn=128, sk=2))]
# ar=2|3: O not a multiple of 16 / of the tile, bias + activations, bf16, split-K, the sk=2 tail, small T
AR_CHECKS = [(1000, 1024, 300, "float16", False, None, dict(ar=2, bm=192)),
             (1003, 1152, 200, "float16", True, "gelu", dict(ar=2, bm=128)),
             (1160, 1024, 1030, "bfloat16", True, "silu", dict(ar=3, bm=128)),
             (520, 2048, 77, "float16", True, None, dict(ar=2, bm=192, ks=2)),
             (2000, 768, 1100, "float16", False, None, dict(ar=2, bm=128, sk=2)),
             (100, 256, 5, "float16", False, "relu", dict(ar=2)),
             (11008, 4096, 1024, "float16", False, None, dict(ar=2, bm=192, gm=8)),
             (4096, 4096, 128, "bfloat16", False, None, dict(ar=3, bm=128, ks=2)),
             (777, 640, 64, "float16", True, None, dict(ar=2, bm=64, bn=64)),
             (1000, 1024, 300, "float16", True, None, dict(ar=2, bm=192, ana=1)),
             (1160, 1024, 1030, "bfloat16", False, "gelu", dict(ar=3, bm=128, ana=1, stages=4))]
BIG_CHECKS = [(1160, 1024, 1030, "float16", True, "silu", dict(bm=128, bn=256, stages=2)),
              (1000, 2048, 300, "bfloat16", False, None, dict(bm=192, bn=128, stages=3)),
              (520, 1024, 1030, "float16", False, None, dict(bm=256, bn=128, stages=3)),
              (1003, 1152, 200, "float16", True, "gelu", dict(bm=128, bn=192, stages=3)),
              # spk=64: half ring slots, A rows of 32 values in the 64B swizzle
              (1160, 1024, 1030, "float16", False, "silu", dict(bm=256, bn=128, stages=6, spk=64)),
              (1000, 2048, 300, "bfloat16", True, None, dict(bm=192, bn=128, stages=7, spk=64, ks=2)),
              (520, 1024, 77, "float16", True, None, dict(bm=128, bn=64, stages=8, spk=64, wip=0)),
              (100, 256, 5, "float16", False, "gelu", dict(spk=64, stages=4))]


def sparse_variants(O, K, T):
    if MODE in ("bert", "bert1"):
        return [{}]
    if MODE == "l2p":
        if T > 128:
            return [{}, dict(l2p=3), dict(l2p=2)]
        return [{}, dict(l2p=3), dict(pdl=2), dict(pdl=2, l2p=3)]
    if MODE == "ar":
        if os.environ.get("DEV_WGSP_AR") == "1":      # run 1 (ar_run1): register sets, tiles, ring depth
            if T > 128:
                return [{}, dict(ar=2, bm=192, gm=8), dict(ar=2, bm=128, gm=8), dict(ar=3, bm=128, gm=8),
                        dict(ar=2, bm=192, gm=4, stages=5), dict(ar=2, bm=192, gm=8, sk=2)]
            return [{}, dict(ar=2, bm=128), dict(ar=2, bm=192), dict(ar=3, bm=128)]
        # run 2: loads not allocated in L1 (ana), shallower rings
        a192 = dict(ar=2, bm=192, gm=4)
        if T > 128:
            return [{}, dict(a192, stages=5), dict(a192, stages=5, ana=1), dict(a192, stages=4, ana=1),
                    dict(a192, stages=3, ana=1), dict(ar=3, bm=128, gm=4, stages=5, ana=1)]
        return [{}, dict(ar=3, bm=128, ana=1), dict(ar=2, bm=128, ana=1), dict(ar=3, bm=128, stages=4, ana=1)]
    if MODE == "tma":
        return [{}, dict(tma=1)]
    if MODE == "mid":
        return [{}, dict(sk=3)]
    if MODE == "mid2":
        return []
    if MODE == "sk3":
        b256 = dict(bm=256, stages=3, gm=4)
        return [{}, dict(sk=2), dict(sk=3), dict(b256, sk=2), dict(b256, sk=3), dict(bm=192, stages=3, gm=8, sk=3)]
    if MODE == "big":
        if os.environ.get("DEV_WGSP_BIG") == "1":      # run 1: tile shapes (wgbig_run1)
            return [{}, dict(bm=256, bn=128, stages=3), dict(bm=128, bn=256, stages=2),
                    dict(bm=192, bn=128, stages=3), dict(bm=128, bn=192, stages=3), dict(gm=8)]
        if os.environ.get("DEV_WGSP_BIG") == "2":      # run 2: rasterisation (wgbig_run2)
            return [{}, dict(bm=256, bn=128, stages=3, gm=4), dict(bm=256, bn=128, stages=3, gm=8),
                    dict(bm=256, bn=128, stages=3, gm=16), dict(bm=192, bn=128, stages=3, gm=8),
                    dict(bm=192, bn=128, stages=3, gm=16), dict(gm=16)]
        b256 = dict(bm=256, bn=128, stages=3, gm=4)
        if os.environ.get("DEV_WGSP_BIG") == "3":      # run 3: split-K against wave quantisation (wgbig_run3)
            return [{}] + [dict(b256, ks=k) for k in (1, 2, 3, 4, 6)] + [dict(bm=192, bn=128, stages=3, gm=8, ks=k)
                                                                       for k in (1, 2)]
        if os.environ.get("DEV_WGSP_BIG", "9") == "9":   # run 9: data-parallel waves + stream-K tail (sk=2)
            if T > 128:
                return [{}, dict(sk=2), dict(bm=256, stages=3, gm=4, sk=2), dict(bm=256, stages=3, gm=4)]
            return [{}]
        if os.environ.get("DEV_WGSP_BIG") == "8":        # run 8: stream-K (sk=1)
            if T > 128:
                return [{}, dict(sk=1), dict(bm=256, stages=3, gm=4, sk=1), dict(bm=128, stages=4, gm=8, sk=1)]
            return [{}, dict(sk=1)]
        if os.environ.get("DEV_WGSP_BIG") == "7":        # run 7: the last wave's tiles split along K (tail)
            if T > 128:
                b256 = dict(bm=256, bn=128, stages=3, gm=4)
                return [{}, dict(tail=2), dict(tail=3), dict(tail=4), dict(b256, tail=4), dict(b256, tail=5)]
            return [{}]
        if os.environ.get("DEV_WGSP_BIG") == "6":        # run 6: half slots (spk=64), deeper rings
            if T > 128:
                return [{}, dict(spk=64, stages=6, wip=0), dict(spk=64, stages=6, wip=1), dict(spk=64, stages=5)]
            return [{}, dict(spk=64, stages=8)]
        if os.environ.get("DEV_WGSP_BIG") == "5":        # run 5: no proxy fence after TMA, wip 0 with 3-5 warpgroups
            return [{}, dict(wip=0)] if T > 128 else [{}]
        # run 4: the new defaults (SPARSE_BIG_TILES) vs the old, split-K with the 16-byte zero fill
        if T > 128:
            return [{}, dict(bm=128, stages=4, gm=1), dict(b256, ks=2), dict(bm=192, bn=128, stages=3, gm=8)]
        return [{}, dict(ks=1)]
    if T >= 512:
        return [{}, dict(bm=256, bn=128, stages=3), dict(bm=128, bn=192, stages=3), dict(wip=0)]
    if T >= 128:
        return [{}, dict(ks=1), dict(ks=2), dict(bm=64)]
    return [{}, dict(ks=1), dict(bm=64), dict(stages=4)]


def dense_variants(O, K, T):
    if MODE in ("bert", "bert1"):
        return [{}]
    if MODE == "l2p":
        return [{}, dict(l2p=3)] + ([dict(pdl=2), dict(pdl=2, l2p=3)] if T <= 128 else [])
    if MODE == "ar":
        return [{}] if T > 128 else []
    if MODE == "big":
        if os.environ.get("DEV_WGSP_BIG", "9") == "9":
            return [{}, dict(sk=2)] if T > 128 else [{}]
        if os.environ.get("DEV_WGSP_BIG") == "8":
            return [{}, dict(sk=1)]
        if os.environ.get("DEV_WGSP_BIG") == "7":
            return [{}, dict(tail=3)] if T > 128 else [{}]
        if os.environ.get("DEV_WGSP_BIG") in ("5", "6"):
            return [{}, dict(wip=0)] if T > 128 else [{}]
        if T == 128 and os.environ.get("DEV_WGSP_BIG") not in ("1", "2", "3"):   # run 4: small grids at T=128
            return [{}, dict(ks=1), dict(ks=2), dict(bm=64, ks=2), dict(bn=64, ks=2)]
        return [{}]
    if MODE == "tma":
        return [{}, dict(tma=1)]
    if MODE == "sk3":
        return [{}, dict(sk=0), dict(sk=3), dict(bm=256, bn=128, stages=3, sk=3)]
    if MODE == "mid":
        return [{}, dict(sk=3), dict(ks=2), dict(ks=4), dict(bn=128, sk=3), dict(bn=128, ks=2),
                dict(bn=128, stages=5), dict(bn=128, stages=5, sk=3)]
    if MODE == "mid2":      # the default, the pre-session-13 default (no split under a wave), its neighbours
        return [{}, dict(ks=1, sk=0), dict(ks=2), dict(ks=4), dict(sk=3)]
    return [{}, dict(bm=64), dict(stages=8), dict(ks=1)]


def bench_cases():
    import cases as C

    out = []
    for O, K in SHAPES:
        for T in TOKENS:
            for v, kn in enumerate(sparse_variants(O, K, T)):
                out.append(C.case(f"b_wgsp{v}_{O}x{K}x{T}", "nm", NM24, O, K, T, knobs=kn, design="wgmma"))
            if T <= 32 or MODE in ("tma", "big", "bert", "bert1", "sk3", "mid", "mid2", "l2p"):
                for v, kn in enumerate(dense_variants(O, K, T)):
                    out.append(C.case(f"b_wgd{v}_{O}x{K}x{T}", "dense", {}, O, K, T, knobs=kn, design="wgmma"))
    return out


def build(outdir):
    import build_kernels as B

    os.makedirs(outdir, exist_ok=True)
    chk, bench = check_cases(), bench_cases()
    B.build(chk, os.path.join(outdir, "check.so"), ARCH)
    B.build(bench, os.path.join(outdir, "bench.so"), ARCH)
    json.dump({"arch": ARCH, "check": chk, "bench": bench}, open(os.path.join(outdir, "cases.json"), "w"), indent=1)


def sp_layout(fmt, dev):
    """The 2:4 layout of both kinds (``sp_values`` and the register-order ``sp_frag``) on ``dev``."""
    from sparsec.backends.cuda.kernels import mma_layout as ML

    return {k: v.to(dev) for k, v in ML.build(fmt, frag=True).items()}


def sp_args(lay, knobs):
    from sparsec.backends.cuda.kernels import mma_layout as ML

    return [lay[n] for n in ML.buffers_for(knobs)]


def check(kdir, outp):
    import env

    def weight_args(fmt, dev, case):
        if type(fmt).__name__ == "NM":
            return sp_args(sp_layout(fmt, dev), case["resolved_knobs"])
        return [fmt.values.contiguous().to(dev)]

    env.check_cases_file(kdir, outp, weight_args, TOL)


def run(kdir, outp):
    import env
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import NM

    meta = json.load(open(os.path.join(kdir, "cases.json")))
    dev = torch.device("cuda")
    res = {"machine": env.machine_info(), "arch": meta["arch"], "check": [], "bench": []}
    res["check"], res["check_timed_out"] = env.checks_in_child(__file__, kdir, outp, 60)
    ok = not res["check_timed_out"] and len(res["check"]) == len(meta["check"])
    res["checks_complete"] = ok
    json.dump(res, open(outp, "w"), indent=1)
    if not ok:
        print("checks incomplete: no benchmark (a hang would stall the timing)", flush=True)
        return
    lib = load_library(os.path.join(kdir, "bench.so"))
    by = {}
    for c in meta["bench"]:
        by.setdefault((c["O"], c["K"], c["T"]), []).append(c)
    from torch.sparse import to_sparse_semi_structured

    for (O, K) in SHAPES:
        g = torch.Generator(device=dev).manual_seed(O + K)
        w = torch.randn(O, K, device=dev, dtype=torch.float16, generator=g) * (1.0 / K ** 0.5)
        grp = w.view(O, K // 4, 4)
        keep = grp.abs().argsort(dim=-1, descending=True)[..., :2]
        mask = torch.zeros_like(grp, dtype=torch.bool).scatter_(-1, keep, True)
        w = (grp * mask).view(O, K)
        sp = sp_layout(NM.from_dense(w, n=2, m=4), dev)
        try:
            w_lt = to_sparse_semi_structured(w)
        except Exception as exc:  # noqa: BLE001
            w_lt = None
            print("cuSPARSELt unavailable:", exc, flush=True)
        for T in TOKENS:
            x = torch.randn(T, K, device=dev, dtype=torch.float16, generator=g)
            ref = F.linear(x.float(), w.float())
            contenders = [("cublas", {}, lambda: F.linear(x, w))]
            if w_lt is not None:
                contenders.append(("cusparselt", {}, lambda: F.linear(x, w_lt)))
            for c in by[(O, K, T)]:
                f = lib[c["name"]]
                y = torch.full((T, O), float("nan"), device=dev, dtype=torch.float16)
                args = (sp_args(sp, c["resolved_knobs"]) if c["format"] == "nm" else [w]) + [x, y]
                try:
                    f(*args)
                    torch.cuda.synchronize()
                    err = float((y.float() - ref).abs().max() / ref.abs().max())
                except Exception as exc:  # noqa: BLE001
                    print("  error", c["name"], str(exc)[:200], flush=True)
                    continue
                contenders.append((c["name"], {"knobs": c["resolved_knobs"], "rel_err": err,
                                               "ok": err <= TOL["float16"], "format": c["format"]},
                                   (lambda f=f, args=args: (f(*args), args[-1])[1])))
            times = {n: [] for n, _, _ in contenders}
            for _ in range(ROUNDS):                     # interleaved rounds
                for n, _, fn in contenders:
                    try:
                        times[n].append(env.bench_graph(fn)[0])
                    except Exception as exc:  # noqa: BLE001
                        print("  bench error", n, str(exc)[:200], flush=True)
            med = {n: sorted(v)[len(v) // 2] for n, v in times.items() if v}
            for n, info, fn in contenders[2 if w_lt is not None else 1:]:
                # the output after the timed graph replays (sk=3's arrival counters reset by every launch)
                fn().fill_(float("nan"))
                yy = fn()
                torch.cuda.synchronize()
                info["rel_err_replayed"] = float((yy.float() - ref).abs().max() / ref.abs().max()) \
                    if yy is not None else None
            row = {"O": O, "K": K, "T": T, "cublas_ms": med["cublas"], "cusparselt_ms": med.get("cusparselt"),
                   "kernels": []}
            for n, info, _ in contenders[2 if w_lt is not None else 1:]:
                if n not in med:
                    continue
                ent = {"name": n, **info, "ms": med[n], "vs_cublas": med["cublas"] / med[n],
                       "vs_cusparselt": (med["cusparselt"] / med[n]) if "cusparselt" in med else None}
                row["kernels"].append(ent)
                print(f"{O}x{K} T={T:<5} {n:<28} {med[n] * 1e3:8.1f}us err {ent['rel_err']:.1e} "
                      f"{'ok' if ent['ok'] else 'BAD'} replayed {ent.get('rel_err_replayed') or 0:.1e} x{ent['vs_cublas']:.2f} cuBLAS ({med['cublas'] * 1e3:.1f}us) "
                      f"x{ent['vs_cusparselt'] or 0:.2f} cuSPARSELt ({(med.get('cusparselt') or 0) * 1e3:.1f}us) "
                      f"{ent['knobs']}", flush=True)
            res["bench"].append(row)
            json.dump(res, open(outp, "w"), indent=1)
        w = w_lt = sp = None    # noqa: F841  (free the weights before the next shape)
        torch.cuda.empty_cache()
    json.dump(res, open(outp, "w"), indent=1)


def prof(kdir, pattern):
    """Run each bench kernel whose name contains ``pattern`` once (under ``ncu``), on its shape's 2:4 weight."""
    import env  # noqa: F401  (the repository on sys.path)
    import torch

    from sparsec.backends.cuda.runtime import load_library
    from sparsec.ir.formats import NM

    meta = json.load(open(os.path.join(kdir, "cases.json")))
    lib = load_library(os.path.join(kdir, "bench.so"))
    dev = torch.device("cuda")
    for c in meta["bench"]:
        if pattern not in c["name"]:
            continue
        O, K, T = c["O"], c["K"], c["T"]
        w = torch.randn(O, K, device=dev, dtype=torch.float16) / K ** 0.5
        grp = w.view(O, K // 4, 4)
        keep = grp.abs().argsort(dim=-1, descending=True)[..., :2]
        w = (grp * torch.zeros_like(grp, dtype=torch.bool).scatter_(-1, keep, True)).view(O, K)
        x = torch.randn(T, K, device=dev, dtype=torch.float16)
        y = torch.empty(T, O, device=dev, dtype=torch.float16)
        args = (sp_args(sp_layout(NM.from_dense(w, n=2, m=4), dev), c["resolved_knobs"]) if c["format"] == "nm"
                else [w]) + [x, y]
        lib[c["name"]](*args)
        torch.cuda.synchronize()
        print("ran", c["name"], c["resolved_knobs"], flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "prof":
        prof(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "build":
        build(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        run(sys.argv[2], sys.argv[3])
