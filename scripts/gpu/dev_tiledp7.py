"""Focused GPU run for the ``tiled`` kernel's ``code="pos7"`` stages (issue #12: 3-byte non-zeros, 7-bit in-group
positions): correctness of its check cases + timing vs cuBLAS and vs ``code="pos"``, in one process.

    python scripts/gpu/dev_tiledp7.py build out/tiledp7          # here: TVM + nvcc (no GPU)
    python scripts/gpu/dev_tiledp7.py run out/tiledp7 OUT.json   # GPU machine: torch + TVM runtime bundle

Correctness: the cases of ``check_cases()`` (below; O, K not multiples of the tiles, K % 8 != 0, empty rows, 99 %
(empty stages, mostly one-entry groups: padded chunks), 0 % (fully dense stages: 16 full groups), bias, every
activation, bf16, split-K, clear="unscatter", pipe 2/3, every (rt, sc) with 16*rt*sc <= 2048, T > 32) plus every
timed kernel at every sparsity, vs ``F.linear`` in fp32 on the GPU. Timing: per cell cuBLAS (``F.linear`` fp16),
``pos`` (default knobs), ``pos`` at the split one step up, ``pos7`` (the same knobs, bank-ordered layout),
``pos7`` on the slot-ordered layout (same kernel: what the bank order buys), ``pos7`` at the split one step up;
CUDA graphs of 20 calls, replayed round-robin ``ROUNDS`` times; medians. GB/s = layout bytes / median time.
Results: ``benchmarks/results/dev/tiledp7_run1.*`` (H100, 26 s; docs/cuda.md).
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864)]
TOKENS = [1, 8, 16, 32]
MODE = os.environ.get("DEV_TILED_MODE", "p7")     # "rows": split="rows" vs "k" (tiledrows_run*); "xpipe": xpipe=1
if MODE in ("rows", "xpipe"):
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32]
elif MODE == "tall":            # taller stages at T = 16 / 32 (activation bytes per weight slot halved)
    SHAPES, TOKENS = SHAPES[1:], [16, 32]
elif MODE == "minb":            # __launch_bounds__(256, minb): registers capped for more warps per SM
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32]
elif MODE in ("wg", "wgu", "wgr"):     # mma="wg" (tiled_wg.py): the decode kernel on warpgroup MMA vs mma.sync; "wgu":
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32]    # its clear="unscatter" vs zeroing; "wgr": ra=1
elif MODE == "wsp":             # sp=1: the stage decoded into the 2:4 sparse wgmma operand + a CUDA-core residual
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32]
elif MODE == "wsp2":            # sp=1 knob neighbours at 80-90 %
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32]
elif MODE == "pdl":             # the zeroing launch of split-K overlapped (programmatic dependent launch)
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32]
elif MODE == "occ":             # 90 % at 16 / 32 tokens: deeper prefetch, more splits, warpgroups per block
    SHAPES, TOKENS = SHAPES[1:], [16, 32]
elif MODE == "s256":            # sp=1 with 256-column stages (two compressed atoms; half the stages and barriers)
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32]
elif MODE == "wgs4":            # 3-4 warpgroups per block (one activation tile for 192-256 rows) at 16 / 32 tokens
    SHAPES, TOKENS = SHAPES[1:], [16, 32]
elif MODE in ("w70", "ks70"):  # 70 % at 16 / 32 tokens: block shape, activation ring, splits (session 11)
    SHAPES, TOKENS = SHAPES[1:], [16, 32]
elif MODE == "t128":           # the wg kernel at 64-128 tokens on BERT-base and LLM shapes (a cost rule for it)
    SHAPES, TOKENS = [(768, 768), (3072, 768), (768, 3072), (4096, 4096), (11008, 4096), (4096, 11008)], [64, 128]
elif MODE == "tbert":          # the wg kernel at 8-32 tokens on BERT-base's shapes
    SHAPES, TOKENS = [(768, 768), (3072, 768), (768, 3072)], [8, 16, 32]
elif MODE == "t1":             # the planner's mma.sync tiled kernel below 8 tokens, BERT-base and LLM shapes
    SHAPES, TOKENS = [(768, 768), (3072, 768), (768, 3072)] + SHAPES, [1, 2, 4]
elif MODE == "wgx":             # xa=1: the activations in registers (also at 64 tokens, where M = 64 is all tokens)
    SHAPES, TOKENS = SHAPES[1:], [8, 16, 32, 64]
SPARSITY = ([0.8, 0.9] if MODE in ("wsp2", "s256") else [0.9] if MODE == "occ" else [0.7] if MODE in ("w70", "ks70")
            else [0.7, 0.8, 0.9])
ROUNDS = 7
ARCH = "sm_90a"

from cases import P7_CHECK  # noqa: E402  (the pos7 check grid, shared with the full GPU check)


def check_cases_wsp() -> list[dict]:
    import cases as C

    return C.tiled_wsp_check_cases()


def check_cases() -> list[dict]:
    import cases as C

    if MODE == "wg":
        return C.tiled_wg_check_cases()
    if MODE == "wgu":           # the unscatter cases and the first few others
        return [c for i, c in enumerate(C.tiled_wg_check_cases()) if "clear" in c["knobs"] or i < 6]
    if MODE == "wgx":           # the wg grid with the activations in registers (xa=1) where wip=0 and tn is free
        return [dict(c, name=c["name"].replace("chk_tiledwg", "chk_tiledwgx"), knobs=dict(c["knobs"], xa=1))
                for c in C.tiled_wg_check_cases() if not c["knobs"].get("wip") and "tn" not in c["knobs"]]
    if MODE == "s256":          # half the wsp grid with 256-column stages
        from sparsec.backends.cuda.kernels.tiled import resolve
        from sparsec.backends.kernels.common import KernelError, MatmulSpec

        out = []
        for i, c in enumerate(check_cases_wsp()):
            kn = dict(c["knobs"], sc=256)
            try:
                resolve(MatmulSpec(c["T"], c["O"], c["K"], c["bias"], c["activation"], c["dtype"]), kn)
            except KernelError:         # 128 tokens: too much shared memory
                continue
            if i % 2 == 0:
                out.append(dict(c, name=c["name"].replace("chk_tiledwsp", "chk_s256"), knobs=kn))
        return out
    if MODE == "wgs4":          # a third of the wg and wsp grids with 3 / 4 warpgroups per block
        return [dict(c, name=c["name"].replace("chk_tiled", "chk_wgs4"), knobs=dict(c["knobs"], wgs=3 + i % 2))
                for i, c in enumerate(C.tiled_wg_check_cases() + check_cases_wsp()) if i % 3 == 1]
    if MODE == "t1":            # a third of the pos7 grid
        return [c for i, c in enumerate(C.tiled_pos7_check_cases()) if i % 3 == 0]
    if MODE == "tbert":         # a quarter of the wg grid (another quarter than t128's)
        return [c for i, c in enumerate(C.tiled_wg_check_cases()) if i % 4 == 1]
    if MODE == "t128":          # a quarter of the wg grid
        return [c for i, c in enumerate(C.tiled_wg_check_cases()) if i % 4 == 0]
    if MODE == "ks70":          # a third of the wg grid at splits off the WG_KSPLIT list
        return [dict(c, name=c["name"].replace("chk_tiled", "chk_ks70"), knobs=dict(c["knobs"], ksplit=(5, 7, 10)[i % 3]))
                for i, c in enumerate(C.tiled_wg_check_cases()) if i % 3 == 0 and c["K"] >= 1000 and not c["activation"]]
    if MODE == "w70":           # a third of the wg grid with one warpgroup / one activation tile ahead
        return [dict(c, name=c["name"].replace("chk_tiled", "chk_w70"), knobs=dict(c["knobs"], wgs=1 + i % 2, xd=1))
                for i, c in enumerate(C.tiled_wg_check_cases()) if i % 3 == 2]
    if MODE == "occ":           # a third of the wg and wsp grids with pf=2
        return [dict(c, name=c["name"].replace("chk_tiled", "chk_occ"), knobs=dict(c["knobs"], pf=2))
                for i, c in enumerate(C.tiled_wg_check_cases() + check_cases_wsp())
                if i % 3 == 0 and not c["knobs"].get("wip")]
    if MODE == "pdl":           # the wg and wsp grids with pdl=1 (split-K ones: the zeroing kernel overlapped)
        return [dict(c, name=c["name"].replace("chk_tiled", "chk_pdl"), knobs=dict(c["knobs"], pdl=1))
                for c in C.tiled_wg_check_cases() + check_cases_wsp()]
    if MODE == "wsp2":          # a third of the wsp grid
        return [c for i, c in enumerate(check_cases_wsp()) if i % 3 == 0]
    if MODE == "wsp":
        return check_cases_wsp()
    if MODE == "wgr":           # the wg grid with a one-buffer A ring where wip=0
        return [dict(c, name=c["name"].replace("chk_tiledwg", "chk_tiledwgr"), knobs=dict(c["knobs"], ra=1))
                for c in C.tiled_wg_check_cases() if not c["knobs"].get("wip")]
    if MODE == "xpipe":     # the pos7 grid (pipe=1 entries) with xpipe=1, on pos and pos7 alternately
        out = []
        for c in C.tiled_pos7_check_cases():
            if c["knobs"].get("pipe", 1) != 1:
                continue
            i = len(out)
            kn = dict(c["knobs"], xpipe=1, **({"code": "pos"} if i % 2 else {}))
            out.append(dict(c, name=c["name"].replace("chk_tiledp7", "chk_tiledxp"), knobs=kn))
        return out
    if MODE == "minb":      # the pos7 grid with minb 3 / 4 alternately, on pos and pos7 alternately
        out = []
        for c in C.tiled_pos7_check_cases():
            i = len(out)
            kn = dict(c["knobs"], minb=3 + i % 2, **({"code": "pos"} if i % 4 >= 2 else {}))
            out.append(dict(c, name=c["name"].replace("chk_tiledp7", "chk_tiledmb"), knobs=kn))
        return out
    if MODE == "rows":      # the pos7 grid with split="rows", on pos and pos7 alternately
        out = []
        for c in C.tiled_pos7_check_cases():
            i = len(out)
            kn = dict(c["knobs"], split="rows", **({"code": "pos"} if i % 2 else {}))
            out.append(dict(c, name=c["name"].replace("chk_tiledp7", "chk_tiledrows"), knobs=kn))
        return out
    return C.tiled_pos7_check_cases()


def variants(O, K, T):
    if MODE == "rows":
        return variants_rows(O, K, T)
    if MODE == "xpipe":
        return [("pos", {}, "bank"), ("p7", {"code": "pos7"}, "bank"), ("pos_xp", {"xpipe": 1}, "bank"),
                ("p7_xp", {"code": "pos7", "xpipe": 1}, "bank")]
    if MODE == "tall":
        return variants_tall(O, K, T)
    if MODE == "wg":
        return variants_wg(O, K, T)
    if MODE == "wgu":
        return variants_wgu(O, K, T)
    if MODE == "wgr":
        return variants_wgr(O, K, T)
    if MODE == "wgx":
        return variants_wgx(O, K, T)
    if MODE == "wsp":
        return variants_wsp(O, K, T)
    if MODE == "wsp2":
        return variants_wsp2(O, K, T)
    if MODE == "pdl":
        return variants_pdl(O, K, T)
    if MODE == "occ":
        return variants_occ(O, K, T)
    if MODE == "w70":
        return variants_w70(O, K, T)
    if MODE == "ks70":          # the planner's 70 % variant at splits around its default, off the WG_KSPLIT list too
        from sparsec.backends.cuda import select as S
        from sparsec.backends.cuda.kernels.tiled import resolve
        from sparsec.backends.kernels.common import MatmulSpec

        spec = MatmulSpec(T, O, K, False, None, "float16")
        p = S.tiled_knobs(0.3, T, "sm_90a")
        d = resolve(spec, p).ksplit
        ks = sorted({max(1, round(d * f)) for f in (0.67, 0.75, 0.83, 1.0, 1.17, 1.33)} | {d - 1, d + 1})
        return resolvable(spec, [(f"ks{k}", dict(p, ksplit=k), "bank") for k in ks if 1 <= k <= 64])
    if MODE in ("t128", "tbert"):
        return variants_t128(O, K, T)
    if MODE == "t1":
        from sparsec.backends.cuda import select as S
        from sparsec.backends.kernels.common import MatmulSpec

        return resolvable(MatmulSpec(T, O, K, False, None, "float16"),
                          [(lab, S.tiled_knobs(d, T, "sm_90a"), "bank") for lab, d in (("p70", 0.3), ("p80", 0.2),
                                                                                         ("p90", 0.1))])
    if MODE == "wgs4":
        return variants_wgs4(O, K, T)
    if MODE == "s256":
        return variants_s256(O, K, T)
    if MODE == "minb":
        out = []
        for lab, kn in (("pos", {}), ("p7", {"code": "pos7"}), ("pos_us", {"clear": "unscatter"})):
            out += [(lab, kn, "bank"), (lab + "_m3", dict(kn, minb=3), "bank"), (lab + "_m4", dict(kn, minb=4), "bank")]
        return out
    return variants_p7(O, K, T)


def resolvable(spec, out):
    """The (label, knobs, order) entries of ``out`` whose knobs the tiled kernel accepts for ``spec``."""
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError

    res = []
    for lab, kn, order in out:
        try:
            resolve(spec, kn)
        except KernelError:
            continue
        res.append((lab, kn, order))
    return res


def variants_tall(O, K, T):
    """The defaults (rt=2: 32-row stages) vs 64-row stages (rt=4, sc=32: pos7 and pos), each at its
    default split and one step up, and the 90 % planner knob (clear="unscatter")."""
    from sparsec.backends.cuda.kernels.tiled import KNOBS, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    ks = list(KNOBS["ksplit"])
    out = [("pos", {}, "bank"), ("p7", {"code": "pos7"}, "bank"), ("pos_us", {"clear": "unscatter"}, "bank")]
    for lab, kn in (("p7_r4", {"code": "pos7", "rt": 4, "sc": 32}), ("pos_r4", {"rt": 4, "sc": 32}),
                    ("pos_r4_us", {"rt": 4, "sc": 32, "clear": "unscatter"})):
        out.append((lab, kn, "bank"))
        i = ks.index(resolve(spec, kn).ksplit)
        if i + 1 < len(ks):
            out.append((lab + "_ks", dict(kn, ksplit=ks[i + 1]), "bank"))
    return resolvable(spec, out)


def variants_wg(O, K, T):
    """mma.sync defaults (pos, pos7) vs mma="wg": pos and pos7 at the default split, pos7 one split step either side,
    sc=128, wip=0, xd=3."""
    from sparsec.backends.cuda.kernels.tiled import WG_KSPLIT, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    wg = {"mma": "wg", "code": "pos7"}
    ks = list(WG_KSPLIT)
    i = ks.index(resolve(spec, wg).ksplit)
    out = [("pos", {}, "bank"), ("p7", {"code": "pos7"}, "bank"), ("wg7", wg, "bank"), ("wg", {"mma": "wg"}, "bank"),
           ("wg_s128", {"mma": "wg", "sc": 128, "pb": 1}, "bank"),
           ("wg_s128g1", {"mma": "wg", "sc": 128, "pb": 1, "wgs": 1}, "bank"),
           ("wg7_s128", dict(wg, sc=128), "bank"), ("wg_xd1", {"mma": "wg", "xd": 1}, "bank"),
           ("wg_pb1", {"mma": "wg", "pb": 1}, "bank")]
    if T > 32:
        out = out[2:]
    if i > 0:
        out.append(("wg_kslo", {"mma": "wg", "ksplit": ks[i - 1]}, "bank"))
    if i + 1 < len(ks):
        out.append(("wg_kshi", {"mma": "wg", "ksplit": ks[i + 1]}, "bank"))
    return resolvable(spec, out)


def variants_wgu(O, K, T):
    """mma="wg" with clear="zero" vs "unscatter": the 70 % (pos7), 90 % (pos, sc=128, pb=1) and 80 % (pos7, sc=128)
    variants of the benchmark, each with both clears; unscatter also one split step down (longer blocks zero
    their ring fewer times per stage) and with pos at sc=64."""
    from sparsec.backends.cuda.kernels.tiled import WG_KSPLIT, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    us = {"clear": "unscatter"}
    s128 = {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if T < 32 else {})}
    ks = list(WG_KSPLIT)
    i = ks.index(resolve(spec, s128).ksplit)
    out = [("wg7", {"mma": "wg", "code": "pos7"}, "bank"), ("wg7_us", {"mma": "wg", "code": "pos7", **us}, "bank"),
           ("wg_s128", s128, "bank"), ("wg_s128_us", dict(s128, **us), "bank"),
           ("wg7_s128", {"mma": "wg", "code": "pos7", "sc": 128}, "bank"),
           ("wg7_s128_us", {"mma": "wg", "code": "pos7", "sc": 128, **us}, "bank"),
           ("wg_us", {"mma": "wg", **us}, "bank")]
    if i > 0:
        out.append(("wg_s128_us_kslo", dict(s128, ksplit=ks[i - 1], **us), "bank"))
    return resolvable(spec, out)


def variants_wgr(O, K, T):
    """mma="wg" with the A ring of 2 (default) vs 1 buffer (``ra=1``: less shared memory, more blocks per SM) for
    the 70 % (pos7), 80 % (pos7, sc=128) and 90 % (pos, sc=128, pb=1) variants; ra=1 also with xd=1, with two
    warpgroups at T < 32 and one split step up."""
    from sparsec.backends.cuda.kernels.tiled import WG_KSPLIT, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    s128 = {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if T < 32 else {})}
    w7 = {"mma": "wg", "code": "pos7"}
    w7s = {"mma": "wg", "code": "pos7", "sc": 128}
    ks = list(WG_KSPLIT)
    out = [("wg7", w7, "bank"), ("wg7_ra1", dict(w7, ra=1), "bank"), ("wg7_ra1_xd1", dict(w7, ra=1, xd=1), "bank"),
           ("wg_s128", s128, "bank"), ("wg_s128_ra1", dict(s128, ra=1), "bank"),
           ("wg_s128_ra1_xd1", dict(s128, ra=1, xd=1), "bank"),
           ("wg7_s128", w7s, "bank"), ("wg7_s128_ra1", dict(w7s, ra=1), "bank"),
           ("wg7_s128_ra1_xd1", dict(w7s, ra=1, xd=1), "bank")]
    if T < 32:
        out.append(("wg_s128g2_ra1", dict(s128, wgs=2, ra=1), "bank"))
    # code="pos" at sc=64 (its scatter is one add per entry since the element-offset encoding)
    out += [("wg", {"mma": "wg"}, "bank"), ("wg_ra1", {"mma": "wg", "ra": 1}, "bank")]
    for lab, kn in (("wg7_ra1", dict(w7, ra=1)), ("wg_s128_ra1", dict(s128, ra=1)), ("wg_ra1", {"mma": "wg", "ra": 1})):
        i = ks.index(resolve(spec, kn).ksplit)
        if i + 1 < len(ks):
            out.append((lab + "_kshi", dict(kn, ksplit=ks[i + 1]), "bank"))
    return resolvable(spec, out)


def variants_wgx(O, K, T):
    """mma="wg" with the activation tile in shared memory (the wgmma B operand) vs in registers (``xa=1``: the
    wgmma A operand, 64 tokens; the weight strips the B operand): the planner's 70 %, 80 % and 90 % variants and
    their xa=1 twins (+ ra=1)."""
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    s128 = {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if T < 32 else {})}
    w7 = {"mma": "wg", "code": "pos7", **({"ra": 1} if T >= 32 else {})}
    w7s = {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1}
    out = [("wg7", w7, "bank"), ("wg7_xa", dict(w7, xa=1), "bank"), ("wg7_xa_ra1", dict(w7, xa=1, ra=1), "bank"),
           ("wg_s128", s128, "bank"), ("wg_s128_xa", dict(s128, xa=1), "bank"),
           ("wg_s128_xa_ra1", dict(s128, xa=1, ra=1), "bank"), ("wg_xa", {"mma": "wg", "xa": 1}, "bank"),
           ("wg_xa_ra1", {"mma": "wg", "xa": 1, "ra": 1}, "bank"),
           ("wg7_s128", w7s, "bank"), ("wg7_s128_xa", dict(w7s, xa=1), "bank")]
    if T < 32:
        out.append(("wg_s128g2_xa_ra1", dict(s128, wgs=2, xa=1, ra=1), "bank"))
    return resolvable(spec, out)


def variants_wsp(O, K, T):
    """The planner's 70 %, 80 % and 90 % variants (dense A stage) against the same on the 2:4 sparse operand
    (``sp=1``; 128-column stages), the residual after the wgmma (into the accumulators) or during it (``rr=1``)."""
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    s128 = {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if T < 32 else {})}
    w7 = {"mma": "wg", "code": "pos7", **({"ra": 1} if T >= 32 else {})}
    w7s = {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1}
    out = [("wg_s128", s128, "bank"), ("wg7_s128", w7s, "bank"), ("wg7", w7, "bank"),
           ("sp_s128", dict(s128, sp=1), "bank"), ("sp_s128_rr", dict(s128, sp=1, rr=1), "bank"),
           ("sp_s128_ra1", dict(s128, sp=1, ra=1, xd=1), "bank"),
           ("sp7_s128", dict(w7s, sp=1), "bank"), ("sp7_s128_rr", dict(w7s, sp=1, rr=1), "bank"),
           ("sp7", dict(w7, sp=1), "bank"), ("sp7_rr", dict(w7, sp=1, rr=1), "bank"),
           ("sp7_rp4", dict(w7, sp=1, rp=4), "bank"), ("sp7_s128_rp4", dict(w7s, sp=1, rp=4), "bank"),
           ("sp_s128_rp1", dict(s128, sp=1, rp=1), "bank")]
    return resolvable(spec, out)


def ks_neighbours(spec, lab, kn, steps=(1, -1)):
    """``(label, knobs, "bank")`` of ``kn`` at the ``mma="wg"`` splits ``steps`` away from its default (``_kshi`` one up,
    ``_kslo`` one down, ``_ks2`` two up), those that exist."""
    from sparsec.backends.cuda.kernels.tiled import WG_KSPLIT, resolve

    i = WG_KSPLIT.index(resolve(spec, kn).ksplit)
    names = {1: "_kshi", -1: "_kslo", 2: "_ks2"}
    return [(lab + names[d], dict(kn, ksplit=WG_KSPLIT[i + d]), "bank") for d in steps
            if 0 <= i + d < len(WG_KSPLIT)]


def variants_wsp2(O, K, T):
    """sp=1 with the residual during the wgmma (rr=1) on 128-column pos stages (the 90 % planner's variant) and its
    knob neighbours: warpgroups per block, batches, A ring, activation tiles ahead, wip=1, the split either side, pos7."""
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    s128 = {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if T < 32 else {})}
    b = dict(s128, sp=1, rr=1)
    out = [("wg_s128", s128, "bank"), ("sp", b, "bank"), ("sp_wgs", dict(b, wgs=2 if T < 32 else 1), "bank"),
           ("sp_pb2", dict(b, pb=2), "bank"), ("sp_ra1", dict(b, ra=1, xd=1), "bank"), ("sp_xd3", dict(b, xd=3), "bank"),
           ("sp_wip1", dict(b, wip=1), "bank"), ("sp_p7", dict(b, code="pos7"), "bank"),
           ("sp_rr0", dict(b, rr=0), "bank")] + ks_neighbours(spec, "sp", b)
    return resolvable(spec, out)


def variants_pdl(O, K, T):
    """The planner's 70 %, 80 % and 90 % variants (select.tiled_knobs) with and without pdl=1."""
    from sparsec.backends.cuda import select as S
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    out = []
    for lab, d in (("p70", 0.3), ("p80", 0.2), ("p90", 0.1)):
        kn = S.tiled_knobs(d, T, "sm_90a")
        out += [(lab, kn, "bank"), (lab + "_pdl", dict(kn, pdl=1), "bank")]
    return resolvable(spec, out)


def variants_w70(O, K, T):
    """70 % at T = 16 / 32: the planner's variant (64-column pos7 stages) with one warpgroup per block, one activation
    tile ahead, both, the one-buffer A ring toggled, three activation tiles, the split either side; the 80 % variant."""
    from sparsec.backends.cuda import select as S
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    p = S.tiled_knobs(0.3, T, "sm_90a")
    ra = {k: v for k, v in p.items() if k != "ra"} if p.get("ra") else dict(p, ra=1)
    out = [("p70", p, "bank"), ("p70_wgs1", dict(p, wgs=1), "bank"), ("p70_xd1", dict(p, xd=1), "bank"),
           ("p70_wgs1_xd1", dict(p, wgs=1, xd=1), "bank"), ("p70_ra", ra, "bank"), ("p70_xd3", dict(p, xd=3), "bank"),
           ("p80", S.tiled_knobs(0.2, T, "sm_90a"), "bank")]
    out += ks_neighbours(spec, "p70", p) + ks_neighbours(spec, "p70_wgs1", dict(p, wgs=1), steps=(-1,))
    return resolvable(spec, out)


def variants_t128(O, K, T):
    """The planner's wg variant at 64-128 tokens (``select.tiled_knobs`` at the cell's density) and its split either
    side."""
    from sparsec.backends.cuda import select as S
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    out = []
    for lab, d in (("p70", 0.3), ("p80", 0.2), ("p90", 0.1)):
        kn = S.tiled_knobs(d, T, "sm_90a")
        out += [(lab, kn, "bank")] + ks_neighbours(spec, lab, kn)
    return resolvable(spec, out)


def variants_occ(O, K, T):
    """90 % at T = 16 / 32: the dense-operand 128-column variant and the sp=1 one, each with the first batch two
    stages ahead (pf=2), one and two splits up, the other warpgroup count."""
    from sparsec.backends.cuda.kernels.tiled import WG_KSPLIT, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    s128 = {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if T < 32 else {})}
    sp = {"mma": "wg", "sc": 128, "pb": 1, "wgs": 1, "sp": 1, "rr": 1, "ra": 1, "xd": 1}
    out = []
    for lab, kn in (("s128", s128), ("sp", sp)):
        ks = resolve(spec, kn).ksplit
        i = WG_KSPLIT.index(ks)
        out += [(lab, kn, "bank"), (lab + "_pf2", dict(kn, pf=2), "bank"),
                (lab + "_wgs", dict(kn, wgs=3 - resolve(spec, kn).wgs), "bank")]
        for j in (1, 2):
            if i + j < len(WG_KSPLIT):
                out.append((lab + f"_ks{j}", dict(kn, ksplit=WG_KSPLIT[i + j]), "bank"))
        if i + 1 < len(WG_KSPLIT):
            out.append((lab + "_pf2_ks1", dict(kn, pf=2, ksplit=WG_KSPLIT[i + 1]), "bank"))
    return resolvable(spec, out)


def variants_wgs4(O, K, T):
    """The planner's 70 / 80 / 90 % variants (select.tiled_knobs) and the same with 3 and 4 warpgroups per block (the
    activation tile shared by 192 / 256 rows: a third / half of the L2 reads of the activations at wgs=2)."""
    from sparsec.backends.cuda import select as S
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    out = []
    for lab, d in (("p70", 0.3), ("p80", 0.2), ("p90", 0.1)):
        kn = S.tiled_knobs(d, T, "sm_90a")
        out += [(lab, kn, "bank"), (lab + "_g3", dict(kn, wgs=3), "bank"), (lab + "_g4", dict(kn, wgs=4), "bank")]
    if T < 32:
        s128 = {"mma": "wg", "sc": 128, "pb": 1}
        out += [("s128_g4", dict(s128, wgs=4), "bank")]
    return resolvable(spec, out)


def variants_s256(O, K, T):
    """The planner's 90 % variant against sp=1 on 256-column stages (two compressed atoms) and its neighbours."""
    from sparsec.backends.cuda import select as S
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    b = {"mma": "wg", "sc": 256, "pb": 2, "wgs": 1, "sp": 1, "rr": 1, "ra": 1, "xd": 1}
    out = [("p90", S.tiled_knobs(0.1, T, "sm_90a"), "bank"), ("p80", S.tiled_knobs(0.2, T, "sm_90a"), "bank"),
           ("s256", b, "bank"), ("s256_pb1", dict(b, pb=1), "bank"), ("s256_wgs2", dict(b, wgs=2), "bank"),
           ("s256_xd2", dict(b, ra=0, xd=2), "bank"),
           ("s256_p7", dict(b, code="pos7"), "bank")] + ks_neighbours(spec, "s256", b)
    return resolvable(spec, out)


def variants_rows(O, K, T):
    """split="k" (pos, pos7 at the default split) vs split="rows" (pos, pos7 at its default split and one step
    either side)."""
    from sparsec.backends.cuda.kernels.tiled import KNOBS, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    d = resolve(spec, {"split": "rows"})
    ks = list(KNOBS["ksplit"])
    i = ks.index(d.ksplit)
    out = [("pos", {}, "bank"), ("p7", {"code": "pos7"}, "bank"), ("rows", {"split": "rows"}, "bank"),
           ("rows_p7", {"split": "rows", "code": "pos7"}, "bank")]
    if i > 0:
        out.append(("rows_p7_kslo", {"split": "rows", "code": "pos7", "ksplit": ks[i - 1]}, "bank"))
    if i + 1 < len(ks):
        out.append(("rows_p7_kshi", {"split": "rows", "code": "pos7", "ksplit": ks[i + 1]}, "bank"))
    return resolvable(spec, out)


def variants_p7(O, K, T):
    """(label, knobs, layout order) of the timed kernels of a cell (``p7_slot`` reuses ``p7``'s kernel)."""
    from sparsec.backends.cuda.kernels.tiled import KNOBS, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    d = resolve(spec, {})
    ks = list(KNOBS["ksplit"])
    i = ks.index(d.ksplit)
    out = [("pos", {}, "bank"), ("p7", {"code": "pos7"}, "bank"), ("p7_slot", {"code": "pos7"}, "slot")]
    if i + 1 < len(ks):
        out += [("pos_ks", {"ksplit": ks[i + 1]}, "bank"), ("p7_ks", {"code": "pos7", "ksplit": ks[i + 1]}, "bank")]
    return resolvable(spec, out)


def build(outdir):
    import build_kernels as B
    import cases as C

    os.makedirs(outdir, exist_ok=True)
    cs = check_cases()
    bench = []
    for (O, K) in SHAPES:
        for T in TOKENS:
            for lab, kn, order in variants(O, K, T):
                if lab == "p7_slot":
                    continue
                bench.append(C.case(f"d_{lab}_{O}x{K}x{T}", "bitmap", {"tile": [8, 32]}, O, K, T, knobs=kn,
                                    design="tiled"))
                bench[-1]["label"] = lab
    B.build(cs + bench, os.path.join(outdir, "dev.so"), ARCH)
    for c in list(bench) if MODE == "p7" else []:
        if c["label"] == "p7":                  # the same kernel on the slot-ordered layout
            bench.append(dict(c, label="p7_slot", order="slot"))
    json.dump({"check": cs, "bench": bench}, open(os.path.join(outdir, "cases.json"), "w"), indent=1)


def layout(w, kn, order="bank"):
    from sparsec.backends.cuda.kernels import tiled_layout as TL

    lay, names = TL.build_for(w, kn, order=order)
    return [lay[n] for n in names], TL.nbytes(lay), lay


def run(kdir, outp):
    import env
    import torch
    import torch.nn.functional as F

    from sparsec.backends.cuda.kernels import tiled_layout as TL
    from sparsec.backends.cuda.runtime import load_library

    cases = json.load(open(os.path.join(kdir, "cases.json")))
    lib = load_library(os.path.join(kdir, "dev.so"))
    dev = torch.device("cuda")
    tol = {"float16": 1e-2, "bfloat16": 3e-2}
    out = {"machine": env.machine_info(), "check": [], "cells": [], "build_s": {}}
    t0 = time.time()
    for i, c in enumerate(cases["check"]):
        w = env.make_weight(c, seed=i)
        fmt = env.pack(c, w)
        k = c["resolved_knobs"]
        bufs = layout(fmt, k)[0]
        dt = getattr(torch, c["dtype"])
        x, b, ref = env.case_io(c, fmt, i)
        y = torch.full((c["T"], c["O"]), float("nan"), dtype=dt, device=dev)
        lib[c["name"]](*[t.to(dev) for t in bufs], x.to(dev), *([b.to(dev)] if b is not None else []), y)
        torch.cuda.synchronize()
        err = float((y.float().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
        ok = err <= tol[c["dtype"]]
        out["check"].append({"name": c["name"], "knobs": k, "rel_err": err, "ok": ok})
        print(f"[{'OK ' if ok else 'BAD'}] {c['name']:<48} {err:.2e}", flush=True)
    print(f"checks done {time.time() - t0:.1f}s", flush=True)
    by_cell = {}
    for c in cases["bench"]:
        by_cell.setdefault((c["O"], c["K"], c["T"]), []).append(c)
    for (O, K) in SHAPES:
        wf = torch.randn(O, K, device=dev, dtype=torch.float16) * (1.0 / K ** 0.5)
        for s in SPARSITY:
            w = wf * (torch.rand(O, K, device=dev) >= s)
            lays = {}
            for T in TOKENS:
                x = torch.randn(T, K, device=dev, dtype=torch.float16)
                ref = F.linear(x.float(), w.float())
                y = torch.empty(T, O, device=dev, dtype=torch.float16)
                fns = {"cublas": (lambda x=x: F.linear(x, w))}
                cell = {"O": O, "K": K, "T": T, "sparsity": s, "err": {}, "knobs": {}, "bytes": {}}
                for c in by_cell.get((O, K, T), []):
                    kn = c["resolved_knobs"]
                    order = c.get("order", "bank")
                    key = (kn.get("code", "pos"), kn["rt"], kn["sc"], order, kn.get("mma", "sync"), kn.get("xa", 0),
                           kn.get("sp", 0))
                    if key not in lays:
                        torch.cuda.synchronize()
                        tb = time.time()
                        lays[key] = layout(w, kn, order)
                        torch.cuda.synchronize()
                        out["build_s"][f"{O}x{K} {s} {key}"] = time.time() - tb
                        lay = lays[key][2]
                        wfn = (TL.pos7_wavefronts(lay) if key[0] == "pos7" else TL.store_wavefronts(lay)) \
                            if not key[6] else -1
                        cell.setdefault("wavefronts", {})[f"{key[0]}_{order}"] = wfn
                    args, nb, _ = lays[key]
                    f = lib[c["name"]]                      # p7_slot: the p7 kernel (same name)
                    y.fill_(float("nan"))
                    f(*args, x, y)
                    torch.cuda.synchronize()
                    cell["err"][c["label"]] = float((y.float() - ref).abs().max() / ref.abs().max())
                    cell["knobs"][c["label"]] = kn
                    cell["bytes"][c["label"]] = nb
                    fns[c["label"]] = (lambda f=f, args=args, x=x, y=y: f(*args, x, y))
                cell["us"] = interleaved(fns)
                cell["gbs"] = {k: cell["bytes"][k] / (v * 1e3) for k, v in cell["us"].items() if k in cell["bytes"]}
                cell["gbs"]["cublas"] = O * K * 2 / (cell["us"]["cublas"] * 1e3)
                out["cells"].append(cell)
                u = cell["us"]
                print(f"{O}x{K} T={T:<3} s={s} cuBLAS {u['cublas']:.1f}us {cell['gbs']['cublas']:.0f}GB/s " + " ".join(
                    f"{k} {v:.1f}us x{u['cublas'] / v:.2f} {cell['gbs'][k]:.0f}GB/s"
                    f"{'' if cell['err'][k] <= 1e-2 else ' BAD'}"
                    for k, v in u.items() if k != "cublas"), flush=True)
                json.dump(out, open(outp, "w"), indent=1)
            del lays
        del wf
        torch.cuda.empty_cache()
        print(f"shape {O}x{K} done {time.time() - t0:.1f}s", flush=True)
    out["seconds"] = time.time() - t0
    json.dump(out, open(outp, "w"), indent=1)
    bad = [c["name"] for c in out["check"] if not c["ok"]]
    badb = [(c["O"], c["K"], c["T"], c["sparsity"], k) for c in out["cells"] for k, e in c["err"].items() if e > 1e-2]
    print(f"check: {len(out['check']) - len(bad)}/{len(out['check'])} ok {bad}; bench errors > 1e-2: {badb}")


def interleaved(fns: dict, iters: int = 20) -> dict:
    import dev_tiled

    dev_tiled.ROUNDS = ROUNDS
    return dev_tiled.interleaved(fns, iters)


def prof(kdir, shape, sparsity, labels):
    """Run the bench kernels of ``labels`` (comma-separated) on ``shape`` (OxK) once each at ``sparsity``, for
    ``ncu`` (stall reasons of the decode loop)."""
    import env  # noqa: F401  (the repository on sys.path)
    import torch

    from sparsec.backends.cuda.runtime import load_library

    cases = json.load(open(os.path.join(kdir, "cases.json")))
    lib = load_library(os.path.join(kdir, "dev.so"))
    dev = torch.device("cuda")
    O, K = map(int, shape.split("x"))
    w = torch.randn(O, K, device=dev, dtype=torch.float16) * (1.0 / K ** 0.5)
    w = w * (torch.rand(O, K, device=dev) >= float(sparsity))
    for c in cases["bench"]:
        if (c["O"], c["K"]) != (O, K) or c["label"] not in labels.split(",") or c.get("order", "bank") != "bank":
            continue
        args = layout(w, c["resolved_knobs"])[0]
        x = torch.randn(c["T"], K, device=dev, dtype=torch.float16)
        y = torch.empty(c["T"], O, device=dev, dtype=torch.float16)
        lib[c["name"]](*args, x, y)
        torch.cuda.synchronize()
        print("ran", c["name"], c["resolved_knobs"], flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2])
    elif sys.argv[1] == "prof":
        prof(*sys.argv[2:6])
    else:
        run(sys.argv[2], sys.argv[3])
