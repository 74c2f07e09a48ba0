"""The kernel cases built here (no GPU) and run on the GPU machine: correctness grid + benchmark grid.

A case fixes what a kernel depends on (format, params, buffer dtypes, O, K, T,
dtype, bias, activation); the weight values are drawn on the GPU machine from
``pattern`` (kernels take nnz-sized buffers as symbolic, so any values fit).
"""
from __future__ import annotations

FMT_PARAMS = {"dense": (), "bitmap": ("tile",), "csr": (), "nm": ("n", "m"), "bsr": ("block",),
              "groupquant": ("group", "bits")}


def buffer_dtypes(fmt: str, dtype: str) -> tuple:
    i32 = "int32"
    return {"dense": (("values", dtype),),
            "bitmap": (("bits", "uint8"), ("tile_ptr", i32), ("values", dtype)),
            "csr": (("indptr", i32), ("indices", i32), ("values", dtype)),
            "nm": (("values", dtype), ("indices", "uint8")),
            "bsr": (("indptr", i32), ("indices", i32), ("blocks", dtype)),
            "groupquant": (("indptr", i32), ("group_idx", i32), ("qvalues", "uint8"), ("scales", "float32"),
                           ("zeros", "uint8"))}[fmt]


def case(name, fmt, params, O, K, T, dtype="float16", bias=False, act=None, pattern=None, knobs=None,
         design="fragment"):
    """``design="tiled"``: the kernel reads the private layout ``tiled_layout.build(fmt, rt, sc)`` of the
    format (resolved knobs) instead of the format's buffers."""
    return {"name": name, "format": fmt, "params": dict(params), "O": O, "K": K, "T": T, "dtype": dtype,
            "bias": bias, "activation": act, "pattern": pattern, "knobs": dict(knobs or {}), "design": design}


# (format, params, pattern) ; pattern: ["unstructured", s, empty_rows] | ["nm", n, m] | ["block", r, c, s] |
# ["group", g, s] | ["dense"]
CHECK_FORMATS = [
    ("dense", {}, ["dense"]),
    ("bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True]),
    ("bitmap", {"tile": [16, 32]}, ["unstructured", 0.5, False]),
    ("bitmap", {"tile": [8, 8]}, ["unstructured", 0.7, True]),
    ("csr", {}, ["unstructured", 0.9, True]),
    ("nm", {"n": 2, "m": 4}, ["nm", 2, 4]),
    ("nm", {"n": 1, "m": 4}, ["nm", 1, 4]),
    ("nm", {"n": 2, "m": 8}, ["nm", 2, 8]),
    ("nm", {"n": 4, "m": 16}, ["nm", 4, 16]),
    ("bsr", {"block": [4, 4]}, ["block", 4, 4, 0.8]),
    ("bsr", {"block": [16, 16]}, ["block", 16, 16, 0.6]),
    ("groupquant", {"group": 32, "bits": 4}, ["group", 32, 0.5]),
    ("groupquant", {"group": 16, "bits": 8}, ["group", 16, 0.3]),
]
CHECK_SHAPES = [(100, 200, 5), (37, 77, 3), (256, 512, 64), (64, 96, 130), (48, 64, 1), (300, 1000, 17)]
EPILOGUES = [(False, None), (True, "gelu"), (True, "relu"), (False, "silu")]


def check_cases() -> list[dict]:
    out = []
    i = 0
    for dtype in ("float16", "bfloat16", "float32"):
        for fmt, params, pat in CHECK_FORMATS:
            for (O, K, T) in CHECK_SHAPES:
                if dtype == "float32" and (O, K, T) not in ((100, 200, 5), (37, 77, 3)):
                    continue
                if dtype == "bfloat16" and (O, K, T) not in ((100, 200, 5), (64, 96, 130), (300, 1000, 17)):
                    continue
                bias, act = EPILOGUES[i % len(EPILOGUES)]
                i += 1
                tag = "_".join(f"{v[0]}x{v[1]}" if isinstance(v, list) else str(v) for v in params.values())
                out.append(case(f"chk{i}_{fmt}{tag}_{dtype}_{O}x{K}x{T}", fmt, params, O, K, T, dtype, bias, act,
                                pat))
    return (out + tiled_check_cases() + tiled_pos7_check_cases() + tiled_wg_check_cases() + tiled_wsp_check_cases()
            + tiled_pdl_check_cases() + tiled_cl_check_cases() + tiled_hint_check_cases()
            + dlight_check_cases()
            + mma_check_cases()
            + wgmma_check_cases())


def mma_check_cases() -> list[dict]:
    """The mma design (dense and 2:4 ``mma.sp``): O, K, T not multiples of the tiles, every epilogue,
    fp16 and bf16, default and explicit tile knobs."""
    out = []
    grid = [(100, 200, 130, "float16", True, "gelu", {}), (1000, 512, 77, "bfloat16", False, None, {}),
            (64, 64, 128, "float16", True, "relu", {}), (130, 1032, 1030, "float16", False, "silu", {}),
            (100, 200, 130, "bfloat16", True, None, dict(bm=32, bn=128, bk=32, wm=1, wn=4, stages=4)),
            (257, 264, 33, "float16", False, None, dict(bm=128, bn=128, bk=32, wm=4, wn=2, stages=3))]
    for i, (O, K, T, dt, bias, act, kn) in enumerate(grid):
        out.append(case(f"chk_mma{i}_dense_{dt}_{O}x{K}x{T}", "dense", {}, O, K, T, dt, bias, act, ["dense"],
                        kn, design="mma"))
    grid = [(100, 208, 130, "float16", True, "gelu", {}), (1000, 512, 77, "bfloat16", False, None, {}),
            (64, 64, 128, "float16", False, None, {}), (130, 1040, 1030, "bfloat16", True, "relu", {}),
            (100, 208, 130, "float16", False, "silu", dict(bm=32, bn=128, bk=32, wm=1, wn=4, stages=4)),
            (257, 272, 33, "float16", True, None, dict(bm=128, bn=64, bk=64, wm=4, wn=2, stages=2))]
    for i, (O, K, T, dt, bias, act, kn) in enumerate(grid):
        out.append(case(f"chk_mma{i}_nm24_{dt}_{O}x{K}x{T}", "nm", {"n": 2, "m": 4}, O, K, T, dt, bias, act,
                        ["nm", 2, 4], kn, design="mma"))
    return out


def wgmma_check_cases() -> list[dict]:
    """The wgmma design (dense, sm_90a): O, K, T not multiples of the tiles, every epilogue, fp16 and
    bf16, split-K with element atomics (odd O) and red.v4, 1-4 warpgroups, ring wrap-around, both main
    loops (ws=0: all threads copy, ws=1: producer warpgroup + mbarriers; the default) with wip 0 and 1."""
    out = []
    grid = [(100, 200, 130, "float16", True, "gelu", {}), (1000, 512, 77, "bfloat16", False, None, {}),
            (64, 64, 128, "float16", True, "relu", {}), (130, 1032, 1030, "float16", False, "silu", {}),
            (257, 264, 33, "float16", False, None, dict(bm=64, bn=32, stages=3)),
            (1003, 520, 200, "bfloat16", True, None, dict(bm=128, bn=128, stages=4, ks=3, ws=0, wip=0)),
            (4096, 4096, 128, "float16", False, None, {}),
            (1160, 512, 1030, "float16", True, "relu", dict(bm=256, bn=128, stages=4, gm=4, ws=0, wip=0)),
            (1000, 520, 130, "float16", True, None, dict(bm=192, bn=96, stages=3, ks=2, ws=0)),
            (520, 1000, 300, "bfloat16", False, "gelu", dict(bm=128, bn=256, stages=3)),
            # wip=1 (one k-tile of wgmma in flight) and ws=1 (producer warpgroup + full/empty mbarriers)
            (1003, 1032, 200, "float16", True, None, dict(bm=128, bn=128, stages=4, wip=1, ws=0)),
            (1000, 2056, 1030, "float16", True, "gelu", dict(bm=128, bn=128, stages=5, ws=1)),
            (1003, 4104, 130, "bfloat16", False, None, dict(bm=128, bn=128, stages=4, ws=1, wip=1, ks=3)),
            (257, 520, 33, "float16", True, "relu", dict(bm=64, bn=32, stages=3, ws=1, wip=1)),
            (520, 1000, 300, "float16", False, None, dict(bm=128, bn=256, stages=4, ws=1, wip=1)),
            (1160, 1032, 1030, "bfloat16", True, "silu", dict(bm=256, bn=128, stages=4, ws=1, wip=1)),
            (1000, 2056, 1030, "float16", False, None, dict(bm=128, bn=256, stages=4, ws=1, wip=0, gm=4)),
            (300, 1000, 5, "float16", True, "gelu", {}), (4096, 4096, 7, "bfloat16", False, None, {}),
            # under one wave at T > 128 (session 13): the default split-K, and stream-K with the fixup (sk=3, the
            # default under an activation): all tiles shared, odd O and K tails
            (4096, 4096, 256, "float16", True, None, {}), (4096, 4096, 256, "bfloat16", True, "gelu", {}),
            (2000, 4104, 300, "float16", False, "relu", dict(sk=3)),
            (1003, 1032, 1100, "float16", True, "silu", dict(bm=128, bn=128, sk=3))]
    for i, (O, K, T, dt, bias, act, kn) in enumerate(grid):
        out.append(case(f"chk_wgmma{i}_dense_{dt}_{O}x{K}x{T}", "dense", {}, O, K, T, dt, bias, act, ["dense"],
                        kn, design="wgmma"))
    # 2:4 weights (wgmma.mma_async.sp, K % 128 == 0): odd O/T, every epilogue, fp16/bf16, split-K, both main
    # loops, 1-4 consumer warpgroups, bn 16-192, decode token counts
    grid = [(100, 256, 130, "float16", True, "gelu", {}), (1000, 512, 77, "bfloat16", False, None, {}),
            (64, 128, 128, "float16", True, "relu", {}), (130, 1024, 1030, "bfloat16", True, "relu", {}),
            (257, 384, 33, "float16", False, None, dict(bm=64, bn=32, stages=3)),
            (1003, 1024, 200, "float16", True, None, dict(bm=128, bn=128, stages=4, ks=3, ws=0, wip=0)),
            (4096, 4096, 16, "float16", False, None, {}), (300, 1024, 5, "float16", True, "gelu", {}),
            (1000, 2048, 1, "bfloat16", False, None, dict(ks=4)),
            (1160, 1024, 1030, "float16", True, "silu", dict(bm=256, bn=128, stages=3)),
            (520, 1024, 300, "float16", False, None, dict(bm=128, bn=192, stages=3, wip=0)),
            (1003, 1152, 200, "bfloat16", True, None, dict(bm=128, bn=64, stages=4, ws=0, wip=1)),
            # ar: the stored values in registers (register-operand wgmma.sp; layout sp_frag), opt-in
            (1000, 1024, 300, "float16", False, None, dict(ar=2, bm=192)),
            (1003, 1152, 200, "bfloat16", True, "gelu", dict(ar=3, bm=128)),
            (520, 2048, 77, "float16", True, None, dict(ar=2, ks=2)),
            # sk=3 (opt-in for 2:4): whole waves + shared tiles, and all tiles shared under an activation
            (2000, 768, 1100, "float16", True, None, dict(bm=128, stages=4, sk=3)),
            (1160, 1024, 1030, "bfloat16", False, "gelu", dict(bm=256, stages=3, gm=4, sk=3))]
    for i, (O, K, T, dt, bias, act, kn) in enumerate(grid):
        out.append(case(f"chk_wgsp{i}_nm24_{dt}_{O}x{K}x{T}", "nm", {"n": 2, "m": 4}, O, K, T, dt, bias, act,
                        ["nm", 2, 4], kn, design="wgmma"))
    # pdl=2 (session 15): chains of dependent calls (check_kernels.chain_err), dense and 2:4, with and without a split,
    # a ring shorter than the k-tiles and one longer (every slot's weight box before the wait), bias, activation
    grid = [("dense", 1024, 1024, 16, "float16", False, None, dict(ks=1)),
            ("dense", 1024, 1024, 32, "bfloat16", True, None, dict(ks=4)),
            ("dense", 1024, 1024, 128, "float16", True, "gelu", dict(ks=1, stages=4)),
            ("dense", 512, 512, 8, "float16", False, None, dict(ks=2, stages=6)),
            ("nm", 2048, 2048, 8, "float16", False, None, dict(ks=2)),
            ("nm", 1024, 1024, 64, "bfloat16", True, "relu", dict(ks=1)),
            # l2p (session 17): the weight's tensor maps with an L2 promotion (256 / 128 / 64 bytes)
            ("dense", 1032, 1032, 32, "float16", True, None, dict(ks=1, l2p=3)),
            ("nm", 1024, 1024, 130, "bfloat16", True, "gelu", dict(ks=1, l2p=2)),
            ("dense", 2048, 2048, 8, "float16", False, None, dict(ks=4, l2p=1))]
    for i, (fmt, O, K, T, dt, bias, act, kn) in enumerate(grid):
        nm = fmt == "nm"
        out.append(dict(case(f"chk_wgpdl{i}_{fmt}_{dt}_{O}x{K}x{T}", fmt, {"n": 2, "m": 4} if nm else {}, O, K, T, dt,
                             bias, act, ["nm", 2, 4] if nm else ["dense"], dict(kn, pdl=2), design="wgmma"), chain=6))
    return out


def dlight_check_cases() -> list[dict]:
    """The dlight dense GEMM (T >= 64): odd shapes, every epilogue, fp16 and bf16."""
    out = []
    for i, (O, K, T, dtype, bias, act) in enumerate([(100, 200, 130, "float16", True, "gelu"),
                                                     (256, 512, 64, "float16", False, None),
                                                     (300, 1000, 257, "float16", True, "relu"),
                                                     (37, 77, 65, "float16", False, "silu"),
                                                     (64, 96, 130, "bfloat16", True, None),
                                                     (300, 1000, 129, "bfloat16", False, "gelu")]):
        out.append(case(f"chk_dlight{i}_dense_{dtype}_{O}x{K}x{T}", "dense", {}, O, K, T, dtype, bias, act,
                        ["dense"], design="dlight"))
    return out


# the decode kernels' shared check grid (tiled, tiled pos7, bmtc, tiled bitmap): odd O/K, empty rows, 0-99 %
# sparsity, T 1..130, bias, every activation
DECODE_CHECK_BASE = [
    # (O, K, T, src format, params, pattern, bias, act, knobs)
    (100, 200, 5, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], False, None, {}),
    (37, 77, 3, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, True], True, "gelu", {}),
    (256, 512, 64, "csr", {}, ["unstructured", 0.8, False], True, None, {}),
    (64, 96, 130, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.5, True], True, "silu", {}),
    (48, 64, 1, "csr", {}, ["unstructured", 0.9, True], False, None, {}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], True, "relu", {}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.99, True], True, None, {"ksplit": 3, "warps": 2}),
    (300, 1000, 8, "csr", {}, ["unstructured", 0.7, True], False, None, {"rt": 4, "sc": 32, "ksplit": 2, "warps": 4}),
    (130, 1000, 2, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, None, {"rt": 1, "sc": 128,
                                                                                          "warps": 4}),
    (200, 4200, 3, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, None, {"warps": 1, "ksplit": 1}),
    (1000, 4104, 32, "csr", {}, ["unstructured", 0.9, False], False, None, {}),
    (1000, 4104, 9, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.6, False], True, "gelu", {"rt": 1, "sc": 64}),
]

# the tiled kernel: from bitmap and csr weights; odd shapes, empty rows, T > 32 (several token tiles),
# K % 8 != 0 (element-wise activation loads), split-K with bias (fp16/bf16 atomics), every (rt, sc),
# more than 31 stages per warp (pointers loaded per stage instead of shuffled)
TILED_CHECK = DECODE_CHECK_BASE[:6] + [
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], True, None, {"ksplit": 3, "warps": 2}),
    (300, 1000, 8, "csr", {}, ["unstructured", 0.7, True], False, None, {"rt": 4, "sc": 32, "ksplit": 2, "warps": 4}),
    (130, 1000, 2, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, None, {"rt": 1, "sc": 128}),
    (200, 4200, 3, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, None, {"warps": 1, "ksplit": 1}),
    (1000, 4104, 32, "csr", {}, ["unstructured", 0.9, False], False, None, {}),
    (1000, 4104, 9, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.6, False], True, "gelu", {"rt": 2}),
    # pipe=2: the next stage's first batch is loaded at the start of the stage (two register sets)
    (100, 200, 5, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], False, None, {"pipe": 2}),
    (300, 1000, 17, "csr", {}, ["unstructured", 0.7, True], True, "gelu", {"pipe": 2, "warps": 2}),
    (300, 1000, 8, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, None,
     {"pipe": 2, "ksplit": 2, "warps": 1}),
    (200, 4200, 3, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, None, {"warps": 1, "pipe": 2}),
    (1000, 4104, 32, "csr", {}, ["unstructured", 0.5, False], False, None, {"pipe": 2, "rt": 4}),
    (64, 96, 130, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], True, "relu", {"pipe": 2}),
    (500, 2000, 32, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], False, None, {"rt": 2, "sc": 64}),
    (500, 2000, 31, "csr", {}, ["unstructured", 0.9, True], True, None, {"rt": 2, "ksplit": 2}),
]


def tiled_check_cases() -> list[dict]:
    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, fmt, params, pat, bias, act, knobs) in enumerate(TILED_CHECK):
            if dtype == "bfloat16" and i % 3:
                continue
            out.append(case(f"chk_tiled{i}_{fmt}_{dtype}_{O}x{K}x{T}", fmt, params, O, K, T, dtype, bias, act, pat,
                            knobs, design="tiled"))
    return out


# the tiled kernel with code="pos7" (3-byte non-zeros; dev_tiledp7.py)
P7_CHECK = DECODE_CHECK_BASE + [
    (500, 2000, 32, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.0, False], False, None, {"rt": 2, "sc": 64}),
    (500, 2000, 31, "csr", {}, ["unstructured", 0.9, True], True, None, {"ksplit": 2}),
    (257, 3000, 5, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, False], False, None, {"rt": 1, "sc": 32,
                                                                                           "warps": 1}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.5, True], True, None, {"rt": 2, "sc": 32,
                                                                                          "warps": 2}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], True, None, {"clear": "unscatter"}),
    (1000, 4104, 9, "csr", {}, ["unstructured", 0.7, False], True, "relu", {"clear": "unscatter", "rt": 4, "sc": 32}),
    (500, 2000, 16, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.0, False], False, None, {"clear": "unscatter"}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, None, {"pipe": 2}),
    (1000, 4104, 9, "csr", {}, ["unstructured", 0.7, False], False, None, {"pipe": 3, "ksplit": 2}),
]


def tiled_pos7_check_cases() -> list[dict]:
    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, fmt, params, pat, bias, act, knobs) in enumerate(P7_CHECK):
            if dtype == "bfloat16" and i % 3:
                continue
            out.append(case(f"chk_tiledp7{i}_{fmt}_{dtype}_{O}x{K}x{T}", fmt, params, O, K, T, dtype, bias, act,
                            pat, dict(knobs, code="pos7"), design="tiled"))
    return out


# tiled with mma="wg" (sm_90a, tiled_wg.py): O not a multiple of 64 or 16, K not a multiple of the stage (K % 8 == 0),
# T not a multiple of 8 and > 32, empty rows, 99 % (empty stages), 0 % (full stages), bias + every activation,
# split-K, sc=128, wip 0 / 1, xd 1 / 3, wgs 1 / 2, pf 1 / 2, pb 1 / 2, code pos and pos7
WG_CHECK = [
    (100, 200, 5, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], False, None, {}),
    (37, 72, 3, "csr", {}, ["unstructured", 0.7, False], True, "gelu", {"wgs": 2}),
    (256, 512, 64, "bitmap", {"tile": [16, 32]}, ["unstructured", 0.5, False], False, None, {"sc": 128}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], True, "relu", {"wip": 0, "wgs": 2, "pf": 2}),
    (48, 64, 1, "csr", {}, ["unstructured", 0.7, True], False, "silu", {}),
    (500, 2000, 32, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.0, False], False, None, {"ksplit": 4, "wgs": 2, "pb": 2}),
    (500, 2000, 31, "csr", {}, ["unstructured", 0.99, True], True, None, {"ksplit": 3, "xd": 1, "pf": 2}),
    (1000, 4104, 9, "csr", {}, ["unstructured", 0.7, False], True, None, {"sc": 128, "xd": 3, "wgs": 2, "pb": 2}),
    (257, 3000, 40, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, False], False, None, {"tn": 24, "pf": 1, "pb": 2}),
    (130, 640, 8, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, False], True, None, {"ksplit": 6}),
    (200, 384, 100, "csr", {}, ["unstructured", 0.8, True], True, None, {"pb": 2}),
    (520, 1024, 128, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, False], False, None, {"ksplit": 2}),
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], False, None, {"wip": 1, "pf": 1,
                                                                                          "wgs": 1}),
    (333, 1288, 12, "csr", {}, ["unstructured", 0.9, True], True, None, {"sc": 128, "pb": 1, "wgs": 1}),
    # clear="unscatter": mostly-unscattered stages (90-95 %), overflowing ones (70 % at sc=128 pb=1, 0 %), with
    # split-K (a block's ring starts mid-K), wip=1 (a ring of 3), pf=2 (two register sets), wgs 1 / 2, bias, gelu
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], True, None,
     {"clear": "unscatter", "pf": 2, "pb": 1, "ksplit": 3}),
    (520, 2048, 32, "csr", {}, ["unstructured", 0.7, False], False, None, {"clear": "unscatter", "sc": 128, "pb": 1}),
    (257, 3000, 24, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.95, True], False, None,
     {"clear": "unscatter", "wip": 1, "wgs": 1, "sc": 128, "pb": 1}),
    (130, 640, 8, "csr", {}, ["unstructured", 0.0, False], True, "gelu", {"clear": "unscatter"}),
    (1000, 4104, 32, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.8, True], False, None,
     {"clear": "unscatter", "sc": 128, "wgs": 2, "ksplit": 8}),
    # fx=1 (session 13; the default under an activation): the splits' partials summed by the tile's last block, then
    # bias + activation; odd O and T, 128-column stages, one warpgroup, and fx without an activation
    (1000, 4104, 16, "csr", {}, ["unstructured", 0.7, False], True, "gelu", {"ksplit": 6}),
    (520, 2048, 33, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, True], False, "silu",
     {"ksplit": 4, "sc": 128, "wgs": 1}),
    (300, 1000, 64, "csr", {}, ["unstructured", 0.8, False], True, None, {"ksplit": 3, "fx": 1}),
    (2000, 3000, 8, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, True], True, "relu", {}),
]


def tiled_wg_check_cases() -> list[dict]:
    """Every WG_CHECK entry with code pos and pos7 (fp16), every third also in bf16."""
    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, fmt, params, pat, bias, act, knobs) in enumerate(WG_CHECK):
            for code in ("pos", "pos7"):
                if dtype == "bfloat16" and (i % 3 or code == "pos"):
                    continue
                out.append(case(f"chk_tiledwg{i}_{code}_{fmt}_{dtype}_{O}x{K}x{T}", fmt, params, O, K, T, dtype, bias,
                                act, pat, dict(knobs, mma="wg", code=code), design="tiled"))
    return out


def tiled_wsp_check_cases() -> list[dict]:
    """The wg grid on the 2:4 sparse operand (``sp=1``, sc=128; wip=0, clear="zero"): the residual after (rr=0) /
    during (rr=1) the wgmma in turn, rp 1 / 2 / 4 in turn (rp=1 at 0-70 %: most stages read rows past the
    registers' from global memory)."""
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    out = []
    for c in tiled_wg_check_cases():
        kn = {k: v for k, v in c["knobs"].items() if k not in ("clear", "sc", "wip")}
        kn.update(sp=1, sc=128, rr=len(out) % 2, rp=(1, 2, 4)[len(out) % 3])
        out.append(dict(c, name=c["name"].replace("chk_tiledwg", "chk_tiledwsp"), knobs=kn))
        if len(out) % 3 == 1:
            # every third also on 256-column stages (two compressed atoms) where it fits shared memory
            k2 = dict(kn, sc=256)
            try:
                resolve(MatmulSpec(c["T"], c["O"], c["K"], c["bias"], c["activation"], c["dtype"]), k2)
            except KernelError:
                continue
            out.append(dict(c, name=c["name"].replace("chk_tiledwg", "chk_tiledwsq"), knobs=k2))
    return out


# pdl=2 (session 15): every launch overlaps the previous kernel on the stream; square layers (O == K) run as a chain
# of dependent calls (check_kernels.chain_err: each call reads the last one's output and overwrites what it read):
# one launch, split-K with its zeroing launch, the fixup, the 2:4 operand with a split, bias + activation, bf16, T=1
PDL_CHECK = [
    (1024, 1024, 16, ["unstructured", 0.9, True], False, None, {"ksplit": 1}),
    (1024, 1024, 16, ["unstructured", 0.7, False], True, None, {"ksplit": 4}),
    (2048, 2048, 32, ["unstructured", 0.8, True], True, "gelu", {"ksplit": 4, "fx": 1}),
    (2048, 2048, 8, ["unstructured", 0.9, False], False, None,
     {"ksplit": 4, "sp": 1, "sc": 256, "code": "pos7", "pb": 2, "wgs": 1, "rr": 1, "ra": 1, "xd": 1}),
    (1000, 1000, 1, ["unstructured", 0.7, True], True, "relu", {"ksplit": 2}),
]


def tiled_pdl_check_cases() -> list[dict]:
    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, pat, bias, act, knobs) in enumerate(PDL_CHECK):
            if dtype == "bfloat16" and i % 2:
                continue
            out.append(dict(case(f"chk_tiledpdl{i}_{dtype}_{O}x{K}x{T}", "bitmap", {"tile": [8, 32]}, O, K, T, dtype,
                                 bias, act, pat, dict(knobs, mma="wg", pdl=2), design="tiled"), chain=6))
    return out


# fx=2 (session 16): a tile's k splits are one thread-block cluster and sum their fp32 partials through distributed
# shared memory (no zeroing launch, no atomics, no workspace): splits 2-8, odd O and T (a tile's tail rows and tokens),
# bias + every activation, one to three warpgroups, 8-64 tokens, the 2:4 operand, code pos / pos7, bf16, more splits
# than stages (blocks with no stage still take part), and chains of 6 dependent calls with pdl=2
CL_CHECK = [
    (1000, 4104, 16, "csr", ["unstructured", 0.7, False], True, "gelu", {"ksplit": 6, "code": "pos7"}, 0),
    (520, 2048, 33, "bitmap", ["unstructured", 0.9, True], False, "silu", {"ksplit": 4, "sc": 128, "wgs": 1}, 0),
    (300, 1000, 64, "csr", ["unstructured", 0.8, False], True, None, {"ksplit": 3}, 0),
    (2000, 3000, 8, "bitmap", ["unstructured", 0.7, True], True, "relu", {"ksplit": 8, "wgs": 3}, 0),
    (100, 200, 5, "bitmap", ["unstructured", 0.9, True], True, None, {"ksplit": 8}, 0),
    (4096, 4096, 8, "bitmap", ["unstructured", 0.9, False], False, None,
     {"ksplit": 8, "sp": 1, "sc": 256, "code": "pos7", "pb": 2, "wgs": 1, "rr": 1, "ra": 1, "xd": 1}, 0),
    (2048, 2048, 32, "bitmap", ["unstructured", 0.8, True], True, "gelu", {"ksplit": 5, "code": "pos7", "ra": 1}, 6),
    (2048, 2048, 16, "bitmap", ["unstructured", 0.9, False], False, None,
     {"ksplit": 7, "sp": 1, "sc": 128, "code": "pos7", "wgs": 3, "rr": 0}, 6),
    (1000, 1000, 1, "csr", ["unstructured", 0.7, True], True, "relu", {"ksplit": 2}, 6),
]


def tiled_cl_check_cases() -> list[dict]:
    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, fmt, pat, bias, act, knobs, chain) in enumerate(CL_CHECK):
            if dtype == "bfloat16" and i % 3 != 1:
                continue
            kn = dict(knobs, mma="wg", fx=2, **({"pdl": 2} if chain else {}))
            c = case(f"chk_tiledcl{i}_{dtype}_{O}x{K}x{T}", fmt, {"tile": [8, 32]} if fmt == "bitmap" else {}, O, K, T,
                     dtype, bias, act, pat, kn, design="tiled")
            out.append(dict(c, chain=chain) if chain else c)
    return out


# ldw (session 17): cache qualifiers on the weight stream's loads (.L2::256B, .L1::no_allocate): code pos (16-byte
# positions) and pos7 (8-byte), the 2:4 operand's metadata loads, split-K and a single split, bias + activation, bf16;
# l2f: the block's weight bytes bulk-prefetched into L2 first
HINT_CHECK = [
    (1000, 4104, 16, "csr", ["unstructured", 0.7, False], True, "gelu", {"ksplit": 3, "code": "pos7", "ldw": 1}),
    (520, 2048, 33, "bitmap", ["unstructured", 0.9, True], False, None, {"ksplit": 4, "code": "pos", "ldw": 2}),
    (300, 1000, 5, "bitmap", ["unstructured", 0.8, False], True, "relu", {"ksplit": 1, "code": "pos7", "ldw": 3}),
    (2048, 2048, 8, "bitmap", ["unstructured", 0.9, False], False, None,
     {"ksplit": 4, "sp": 1, "sc": 256, "code": "pos7", "pb": 2, "wgs": 1, "rr": 1, "ra": 1, "xd": 1, "ldw": 2}),
    (2000, 3000, 32, "csr", ["unstructured", 0.8, True], True, None, {"ksplit": 5, "code": "pos", "ra": 1, "ldw": 2,
                                                                        "pdl": 2}),
    # l2f (pos7's range cut to whole 16-byte units, odd first chunks), with pdl=2 before the wait, one split and many
    (1000, 4104, 16, "csr", ["unstructured", 0.7, True], True, "gelu", {"ksplit": 3, "code": "pos7", "l2f": 1}),
    (520, 2048, 33, "bitmap", ["unstructured", 0.9, False], False, None, {"ksplit": 6, "code": "pos", "l2f": 1,
                                                                         "pdl": 2}),
    (2048, 2048, 8, "bitmap", ["unstructured", 0.9, True], False, None,
     {"ksplit": 4, "sp": 1, "sc": 256, "code": "pos7", "pb": 2, "wgs": 1, "rr": 1, "ra": 1, "xd": 1, "l2f": 1}),
    (300, 1000, 5, "bitmap", ["unstructured", 0.8, False], True, "relu", {"ksplit": 1, "code": "pos7", "l2f": 1}),
]


def tiled_hint_check_cases() -> list[dict]:
    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, fmt, pat, bias, act, knobs) in enumerate(HINT_CHECK):
            if dtype == "bfloat16" and i % 2:
                continue
            out.append(case(f"chk_tiledldw{i}_{dtype}_{O}x{K}x{T}", fmt, {"tile": [8, 32]} if fmt == "bitmap" else {},
                            O, K, T, dtype, bias, act, pat, dict(knobs, mma="wg"), design="tiled"))
    return out


BENCH_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864)]
BENCH_TOKENS = [1, 8, 16, 32, 128, 1024]
BENCH_SPARSITY = [0.5, 0.7, 0.8, 0.9]
BENCH_NM = [(2, 4), (1, 4), (2, 8)]


TILED_TOKENS = (1, 8, 16, 32, 128)


def tiled_variants(O, K, T, roles: dict | None = None) -> list[dict]:
    """Knob sets of the tiled kernel timed per cell: the default and neighbours (the fastest is kept), and per
    benchmark sparsity the planner's variant (what ``sparsec compile`` runs untuned) and the tuning database's
    (``backends/cuda/tune.py``; the shipped H100 records): ``roles[i]`` lists ``planner<pct>`` / ``tuned<pct>``
    for variant ``i``."""
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(T, O, K, False, None, "float16")
    d = resolve(spec, None)
    out, seen = [], set()
    # (pipe=2 and warps 4/16 were timed on the H100 on 2026-11-23 and never won by more than noise)
    # clear="unscatter": what the planner uses at <= 1/8 density (select.tiled_knobs); kept where it is faster
    # code="pos7" (3-byte non-zeros): what the planner uses from density 0.2 (select.tiled_knobs)
    cands = [{}, {"ksplit": min(16, d.ksplit * 2)}, {"rt": 2 if d.rt != 2 else 4, "sc": 64 if d.rt != 2 else 32},
             {"clear": "unscatter"}, {"code": "pos7"}, {"code": "pos7", "ksplit": min(16, d.ksplit * 2)}]
    if T >= 128:
        cands = [{}, {"code": "pos7"}]
    if T >= 8:
        # mma="wg" (tiled_wg.py, sm_90a): the decode kernel on warpgroup MMA, pos7 and pos at its default split, pos7
        # at the next split up (H100 dev runs 2-3, benchmarks/results/dev/wg_run{2,3}.json: faster than the mma.sync
        # kernel at T >= 16 on the three large LLM shapes, up to 1.6x at T=32, and at T=8 at 70 %)
        from sparsec.backends.cuda.kernels.tiled import WG_KSPLIT

        wk = resolve(spec, {"mma": "wg"}).ksplit
        up = next((k for k in WG_KSPLIT if k > wk), wk)
        cands += [{"mma": "wg", "code": "pos7"}, {"mma": "wg"}, {"mma": "wg", "code": "pos7", "ksplit": up},
                  # 128-column stages (dev run 4: fastest at 90 %; wgs=1 below 32 tokens; pos7 at 80 % on 9216x36864)
                  {"mma": "wg", "sc": 128, "pb": 1, **({"wgs": 1} if T < 32 else {})},
                  {"mma": "wg", "code": "pos7", "sc": 128},
                  # a one-buffer A ring (ra=1: more blocks per SM; session 9, benchmarks/results/dev/wgr_run{2,3}):
                  # the planner's 80 % variant (+ xd=1) and its 70 % variant from T=32, two warpgroups at 90 % below
                  # 32 tokens, the 70 % variant one split up (deep K)
                  {"mma": "wg", "code": "pos7", "sc": 128, "ra": 1, "xd": 1}, {"mma": "wg", "code": "pos7", "ra": 1},
                  {"mma": "wg", "sc": 128, "pb": 1, "ra": 1, **({"wgs": 2} if T < 32 else {})},
                  {"mma": "wg", "code": "pos7", "ra": 1, "ksplit": up}]
        # the 2:4 sparse operand (sp=1; session 10, benchmarks/results/dev/{wsp_run2,wsp_run3,s256_run1}): faster at
        # 90 % below 32 tokens, slower at 70-80 % (the residual); the planner's variant (256-column pos7 stages), the
        # same with pos and one split up, 128-column stages; at T=32 256-column stages with two warpgroups
        sp = {"mma": "wg", "code": "pos7", "sc": 256, "pb": 2, "wgs": 1, "sp": 1, "rr": 1, "ra": 1, "xd": 1}
        if T < 32:
            cands += [sp, dict(sp, code="pos"), dict(sp, ksplit=next((k for k in WG_KSPLIT
                                                                      if k > resolve(spec, sp).ksplit), wk)),
                      {"mma": "wg", "sc": 128, "pb": 1, "wgs": 1, "sp": 1, "rr": 1, "ra": 1, "xd": 1}]
        elif T == 32:
            cands += [dict(sp, code="pos", wgs=2)]
    from sparsec.backends.cuda import select as S
    from sparsec.backends.cuda import tune

    tagged = []
    for s in BENCH_SPARSITY:
        pct = int(round(s * 100))
        d = round(1 - s, 4)     # 0.2, not 0.19999999999999996: the planner's thresholds sit on round densities
        tagged.append((S.tiled_knobs(d, T, "sm_90a"), f"planner{pct}"))
        hit = tune.lookup(O, K, T, d, "float16", "sm_90a")
        if hit:
            tagged.append((hit[0], f"tuned{pct}"))
    index = {}
    for kn, role in [(kn, None) for kn in cands] + tagged:
        try:
            r = resolve(spec, kn).knobs()
        except KernelError:
            continue
        key = tuple(sorted(r.items()))
        if key not in seen:
            seen.add(key)
            index[key] = len(out)
            out.append(r)
        if role and roles is not None:
            roles.setdefault(index[key], []).append(role)
    return out


def tuned_dense_knobs(O: int, K: int, T: int) -> dict | None:
    """The shipped H100 tuning record's knobs for a dense fp16 layer on the wgmma GEMM (``sparsec autotune``,
    ``backends/cuda/tuned_h100.jsonl``) where they differ from the kernel's defaults, else None."""
    from sparsec.backends.cuda import tune
    from sparsec.backends.cuda.kernels.wgmma_gemm import resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    hit = tune.lookup(O, K, T, 1.0, "float16", "sm_90a", kind="dense")
    if hit is None:
        return None
    spec = MatmulSpec(T, O, K, False, None, "float16")
    try:
        knobs = {k: v for k, v in hit[0].items() if k not in ("design", "bk")}
        if resolve(O, K, T, knobs, spec) == resolve(O, K, T, None, spec):
            return None
    except KernelError:
        return None
    return knobs


def bench_cases() -> list[dict]:
    """One kernel per (format, shape, tokens); sparsity levels share the kernel."""
    from sparsec.backends.cuda import select as S

    out = []
    for (O, K) in BENCH_SHAPES:
        for T in BENCH_TOKENS:
            if T >= 32:
                out.append(case(f"b_dldense_{O}x{K}x{T}", "dense", {}, O, K, T, design="dlight"))
            if T >= 128:      # the mma design (dense, and 2:4 on the sparse tensor cores), default knobs
                out.append(case(f"b_mmadense_{O}x{K}x{T}", "dense", {}, O, K, T, design="mma"))
                out.append(case(f"b_mmanm24_{O}x{K}x{T}", "nm", {"n": 2, "m": 4}, O, K, T, design="mma"))
            # the Hopper wgmma design (sm_90a: build_kernels' default arch), default knobs: dense, and 2:4 on
            # wgmma.mma_async.sp (every token count)
            out.append(case(f"b_wgdense_{O}x{K}x{T}", "dense", {}, O, K, T, design="wgmma"))
            tuned = tuned_dense_knobs(O, K, T)
            if tuned is not None:       # what compile runs for a dense layer of this shape: the shipped record's
                out.append(case(f"b_wgdensetuned_{O}x{K}x{T}", "dense", {}, O, K, T, knobs=tuned, design="wgmma"))
            # without a record, compile runs the defaults with the planner's knobs (select.wgmma_knobs: pdl, l2p)
            out.append(case(f"b_wgdenseplan_{O}x{K}x{T}", "dense", {}, O, K, T, knobs=S.wgmma_knobs(O, K, T),
                            design="wgmma"))
            out.append(case(f"b_wgnm24_{O}x{K}x{T}", "nm", {"n": 2, "m": 4}, O, K, T, design="wgmma"))
            # the same with every launch overlapping the previous one (pdl=2, session 15) where the default grid
            # takes it (not stream-K)
            for nm, fmt, params in (("b_wgdensepdl", "dense", {}), ("b_wgnm24pdl", "nm", {"n": 2, "m": 4})):
                if S.wgmma_takes_pdl(O, K, T, fmt == "nm"):
                    out.append(case(f"{nm}_{O}x{K}x{T}", fmt, params, O, K, T, knobs={"pdl": 2}, design="wgmma"))
            if T in TILED_TOKENS:
                roles: dict = {}
                for v, kn in enumerate(tiled_variants(O, K, T, roles)):
                    kn = {k: x for k, x in kn.items() if k != "design"}
                    out.append(dict(case(f"b_tiled{v}_{O}x{K}x{T}", "bitmap", {"tile": [8, 32]}, O, K, T, knobs=kn,
                                         design="tiled"), roles=roles.get(v, [])))
            out.append(case(f"b_dense_{O}x{K}x{T}", "dense", {}, O, K, T))
            out.append(case(f"b_bitmap_{O}x{K}x{T}", "bitmap", {"tile": [8, 32]}, O, K, T))
            out.append(case(f"b_csr_{O}x{K}x{T}", "csr", {}, O, K, T))
            for n, m in BENCH_NM:
                out.append(case(f"b_nm{n}{m}_{O}x{K}x{T}", "nm", {"n": n, "m": m}, O, K, T))
    return out


# the bmtc kernel (bitmap in mma-fragment order, register decode): from bitmap and csr weights; O, K not
# multiples of the tiles (K % 8 != 0: element-wise activation loads), empty rows, empty stages (99 %),
# T > 32 (several token tiles), bias, every activation, bf16, split-K with bias (atomics), every (rt, sc)
BMTC_CHECK = DECODE_CHECK_BASE + [
    (500, 2000, 32, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.0, False], False, None, {"rt": 2, "sc": 64,
                                                                                            "warps": 4}),
    (500, 2000, 31, "csr", {}, ["unstructured", 0.9, True], True, None, {"ksplit": 2}),
    # stage buffers per warp (cp.async stages in flight): 2, 3, 6
    (300, 1000, 17, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.7, True], True, None, {"warps": 8, "nbuf": 2}),
    (1000, 4104, 16, "csr", {}, ["unstructured", 0.8, True], True, "silu", {"nbuf": 3, "warps": 2}),
    (257, 3000, 5, "bitmap", {"tile": [8, 32]}, ["unstructured", 0.9, False], False, None, {"nbuf": 6, "warps": 1}),
]


def bmtc_check_cases() -> list[dict]:
    out = []
    for dtype in ("float16", "bfloat16"):
        for i, (O, K, T, fmt, params, pat, bias, act, knobs) in enumerate(BMTC_CHECK):
            if dtype == "bfloat16" and i % 3:
                continue
            out.append(case(f"chk_bmtc{i}_{fmt}_{dtype}_{O}x{K}x{T}", fmt, params, O, K, T, dtype, bias, act, pat,
                            knobs, design="bmtc"))
    return out
