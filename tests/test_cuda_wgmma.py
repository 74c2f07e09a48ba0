"""design="wgmma" (Hopper wgmma.mma_async GEMM, dense): generated and nvcc-compiled for sm_90a here (no GPU),
the instructions it must use checked in the PTX; the 128B-swizzle layout the kernel writes with cp.async
checked against the hardware's swizzle function, and the matrix descriptor's bit fields.

Numerical correctness runs on an H100: ``scripts/gpu/dev_wgmma.py`` (benchmarks/results/dev/wgmma_*.log).
"""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")


def _dense(O, K, dt=torch.float16):
    from sparsec.ir.formats import Dense

    return Dense.from_dense(torch.randn(O, K, generator=torch.Generator().manual_seed(0)).to(dt))


CONFIGS = {
    # sym: (O, K, T, dtype, bias, act, knobs)
    "wg_f16_split": (1000, 520, 130, torch.float16, True, None, dict(bm=128, bn=128, stages=4, ks=3, ws=0, wip=0)),
    "wg_f16_ws_split": (1000, 4104, 130, torch.float16, False, None, dict(bm=128, bn=128, stages=5, ks=4)),
    "wg_bf16_gelu": (100, 200, 77, torch.bfloat16, True, "gelu", {}),
    "wg_f16_256": (1160, 512, 1030, torch.float16, False, "relu", dict(bm=256, bn=128, stages=4, ws=0)),
    "wg_f16_n256": (520, 1000, 300, torch.float16, False, None, dict(bm=128, bn=256, stages=3)),
}


@pytest.fixture(scope="module")
def built():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    funcs, knobs = {}, {}
    for sym, (O, K, T, dt, bias, act, kn) in CONFIGS.items():
        funcs[sym], _, knobs[sym] = cuda_matmul_primfunc(_dense(O, K, dt), T, bias=bias, activation=act, knobs=kn,
                                                         name=sym, design="wgmma")
    lib = tc.build(tvm.IRModule(funcs), "sm_90a")       # fp16 and bf16 kernels in one module
    ptx = tc.ptx(lib, "sm_90a")
    bodies = tc.ptx_entries(ptx)
    return funcs, knobs, bodies, tc.device_source(lib)


def _main(bodies, sym):
    """The GEMM kernel of ``sym`` (split-K adds a zeroing kernel: the main one is ``_kernel_1``)."""
    cands = [b for n, b in bodies.items() if n.startswith(sym + "_kernel") and "wgmma" in b]
    assert len(cands) == 1, sorted(bodies)
    return cands[0]


def test_wgmma_kernels_use_warpgroup_mma_from_descriptors(built):
    _, knobs, bodies, src = built
    for sym, (O, K, T, dt, *_rest) in CONFIGS.items():
        body = _main(bodies, sym)
        pt = "f16" if dt == torch.float16 else "bf16"
        bn = knobs[sym]["bn"]
        # m64nNk16 with two 64-bit descriptors (ss form), fp32 accumulators
        assert re.search(rf"wgmma\.mma_async\.sync\.aligned\.m64n{bn}k16\.f32\.{pt}\.{pt}", body), sym
        wip = knobs[sym]["wip"]
        for ins in ("wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned", f"wgmma.wait_group.sync.aligned {wip}",
                    "wgmma.wait_group.sync.aligned 0"):
            assert ins in body, (sym, ins)
        # cp.async writes the ring through the generic proxy: a proxy fence before wgmma reads it (TMA: none)
        assert ("fence.proxy.async.shared::cta" in body) != bool(knobs[sym].get("tma")), sym
        # the producer: TMA boxes completing an expect_tx (tma=1, the default with ws=1), or 16-byte cp.async
        if knobs[sym].get("tma"):
            assert "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes" in body, sym
            assert "mbarrier.arrive.expect_tx.shared::cta.b64" in body and "cp.async.cg.shared.global" not in body
        else:
            assert "cp.async.cg.shared.global" in body and "cp.async.wait_group" in body, sym
        assert "ldmatrix" not in body and "mma.sync" not in body
        # 4 k16 slices per 64-column k-tile (nvcc may unroll the k loop: a multiple of 4)
        n = len(re.findall(r"wgmma\.mma_async", body))
        assert n >= 4 and n % 4 == 0, (sym, n)
    # ws=1: a producer warpgroup signals full slots with cp.async.mbarrier.arrive.noinc, consumers release
    # them with mbarrier.arrive; ws=0: one barrier per k-tile, no mbarrier
    for sym in CONFIGS:
        body = _main(bodies, sym)
        ws = knobs[sym]["ws"]
        nwg = knobs[sym]["bm"] // 64 + ws
        for ins in ("mbarrier.try_wait.parity.shared::cta.b64", "mbarrier.init.shared::cta.b64",
                    "mbarrier.arrive.shared::cta.b64"):
            assert (ins in body) == bool(ws), (sym, ins)
        assert ("cp.async.mbarrier.arrive.noinc.shared::cta.b64" in body) == bool(ws and not knobs[sym].get("tma"))
        assert re.search(rf"__launch_bounds__\({128 * nwg}\) {sym}_kernel", src), (sym, nwg)
    assert knobs["wg_f16_ws_split"]["ws"] == 1 and knobs["wg_bf16_gelu"]["ws"] == 1      # the default
    assert knobs["wg_bf16_gelu"]["tma"] == 1 and "tma" not in knobs["wg_f16_split"]       # ws=0: no TMA
    # the tensor maps are kernel parameters (__grid_constant__ CUtensorMap, encoded on the host per call)
    assert "const __grid_constant__ CUtensorMap" in src
    # the dynamic shared memory array is declared once per element type (fp16 + bf16 in one module)
    assert "extern __shared__" in src and "wgmma_smem_f16" in src and "wgmma_smem_bf16" in src
    # split-K: fp16x2 vector atomics into Y
    assert "red.global.add.noftz.v4.f16x2" in _main(bodies, "wg_f16_split")
    assert knobs["wg_f16_split"]["ks"] == 3 and knobs["wg_f16_256"]["bm"] == 256


def test_wgmma_needs_sm_90a():
    """sm_90 has no wgmma encoding: ptxas refuses the kernel (the caller must build with arch='sm_90a')."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    f = cuda_matmul_primfunc(_dense(128, 128), 128, design="wgmma", name="wg_90")[0]
    with pytest.raises(Exception, match="(?i)wgmma|sm_90a|not supported"):
        tc.build(tvm.IRModule({"wg_90": f}), "sm_90")
    assert tc.check_arch("sm_90a") == "sm_90a"


def test_wgmma_rejects_what_it_cannot_compute():
    from sparsec.backends.kernels.common import KernelError
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import NM

    nm = torch.zeros(64, 64, dtype=torch.float16)
    nm[:, ::16] = 1
    with pytest.raises(KernelError, match="at most 2 per 4 columns"):
        cuda_matmul_primfunc(NM.from_dense(nm, n=4, m=16), 128, design="wgmma")
    nm[:, ::2] = 1
    with pytest.raises(KernelError, match="multiple of 128"):           # 2:4: whole 128-column k-tiles
        cuda_matmul_primfunc(NM.from_dense(nm, n=2, m=4), 128, design="wgmma")
    with pytest.raises(KernelError, match="multiple of 8"):
        cuda_matmul_primfunc(_dense(64, 60), 128, design="wgmma")
    with pytest.raises(KernelError, match="dtype float32"):
        cuda_matmul_primfunc(_dense(64, 64, torch.float32), 128, design="wgmma")
    with pytest.raises(KernelError, match="activation"):
        cuda_matmul_primfunc(_dense(64, 4096), 128, activation="relu", knobs={"ks": 4}, design="wgmma")
    with pytest.raises(KernelError, match="shared memory"):
        cuda_matmul_primfunc(_dense(64, 4096), 1024, knobs=dict(bm=128, bn=256, stages=6), design="wgmma")
    with pytest.raises(KernelError, match="accumulators"):
        cuda_matmul_primfunc(_dense(64, 4096), 1024, knobs=dict(bm=256, bn=256, stages=3), design="wgmma")
    with pytest.raises(KernelError, match="not one of"):
        cuda_matmul_primfunc(_dense(64, 4096), 1024, knobs=dict(bm=96), design="wgmma")


def _swizzled_offset(r, c):
    """Where the kernel's cp.async puts 16-byte chunk ``c`` of tile row ``r`` (bytes from the tile base)."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import swizzled_chunk

    return r * 128 + swizzled_chunk(r, c) * 16


def test_swizzle_matches_the_hardware_128B_pattern():
    """wgmma with a 128B-swizzled K-major descriptor (stride byte offset 1024) reads element (r, k) of the
    tile at canonical byte address r*128 + 2k, XOR-ed: bits [4,7) ^= bits [7,10) (CUTLASS Swizzle<3,4,3>).
    Build the shared-memory image the kernel writes and read it back the hardware's way, including the
    +32-byte start-address advance of each k16 slice."""
    R, K = 128, 64
    tile = torch.arange(R * K, dtype=torch.int32).view(R, K)       # element ids
    smem = torch.full((R * 128 // 2,), -1, dtype=torch.int32)      # one slot per 2-byte element
    for r in range(R):
        for c in range(8):
            off = _swizzled_offset(r, c) // 2
            smem[off:off + 8] = tile[r, c * 8:(c + 1) * 8]
    assert (smem >= 0).all()

    def hw(addr):
        return addr ^ (((addr >> 7) & 7) << 4)

    for kk in range(4):                           # k16 slice kk: descriptor start + 32 * kk bytes
        for r in range(R):
            for k in range(16):
                a = (r // 8) * 1024 + (r % 8) * 128 + kk * 32 + 2 * k    # SBO = 1024 between 8-row groups
                assert smem[hw(a) // 2] == tile[r, kk * 16 + k], (kk, r, k)


def test_descriptor_fields():
    from tvm import tirx

    from sparsec.backends.cuda.kernels.wgmma_gemm import smem_descriptor

    addr = 0x1_2C00 + 32                            # a shared-memory byte address (uint32)
    e = smem_descriptor(tirx.const(addr, "uint32"))
    assert isinstance(e, tirx.Add) and "uint64" in str(e.ty)
    v = int(e.b.value)                              # the constant fields
    assert v & 0x3FFF == 0                                     # start address: the runtime term
    assert "uint32(" + str(addr) + ") >> T.uint32(4) & T.uint32(16383)" in str(e.a)   # (addr >> 4) & 0x3FFF
    assert (v >> 16) & 0x3FFF == 1                             # leading byte offset (unused, swizzled K-major)
    assert (v >> 32) & 0x3FFF == 1024 >> 4                     # stride byte offset: 8 rows x 128 B
    assert (v >> 49) & 0x7 == 0                                # base offset: tiles 1024-byte aligned
    assert v >> 62 == 1                                        # layout type 1: 128-byte swizzle


def _nm24(O, K, dt=torch.float16):
    from sparsec.ir.formats import NM
    from sparsec.passes.prune import prune_nm

    w = torch.randn(O, K, generator=torch.Generator().manual_seed(1))
    return NM.from_dense(prune_nm(w, 2, 4).weight.to(dt), n=2, m=4)


SPARSE = {
    # sym: (O, K, T, dtype, bias, act, knobs)
    "wgsp_f16_decode": (4096, 4096, 16, torch.float16, False, None, {}),
    "wgsp_bf16_gelu": (100, 256, 130, torch.bfloat16, True, "gelu", {}),
    "wgsp_f16_sync_split": (1003, 1024, 200, torch.float16, True, None, dict(bm=128, bn=128, stages=4, ks=3, ws=0)),
    "wgsp_f16_256": (1160, 1024, 1030, torch.float16, False, "silu", dict(bm=256, bn=128, stages=3)),
    "wgsp_f16_192": (1000, 1024, 1030, torch.float16, True, None, dict(bm=192, bn=128, stages=3, gm=8)),
    "wgsp_f16_half": (1000, 1024, 1030, torch.float16, False, None, dict(bm=192, stages=7, spk=64)),
}


def test_wgmma_sparse_uses_wgmma_sp_with_metadata_in_the_ring():
    """2:4 weights: wgmma.mma_async.sp m64nNk32 (inline asm: not in TVM's PTX table) from two descriptors and a
    metadata register, 4 per 128-column k-tile; metadata copied into the ring with the tiles (cp.async); the
    accumulators passed by pointer stay in registers (no local memory)."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    funcs, knobs, args = {}, {}, {}
    for sym, (O, K, T, dt, bias, act, kn) in SPARSE.items():
        funcs[sym], a, knobs[sym] = cuda_matmul_primfunc(_nm24(O, K, dt), T, bias=bias, activation=act, knobs=kn,
                                                         name=sym, design="wgmma")
        args[sym] = [(x.name, x.shape) for x in a]
    lib = tc.build(tvm.IRModule(funcs), "sm_90a")
    ptx = tc.ptx(lib, "sm_90a")
    for sym, (O, K, T, dt, *_rest) in SPARSE.items():
        assert args[sym][:2] == [("sp_values", (O, K // 2)), ("sp_meta", (-(-O // 16), K // 16, 8))], sym
        assert knobs[sym]["bk"] == SPARSE[sym][-1].get("spk", 128)
        m = re.search(rf"\.entry {sym}_kernel(_1)?\(", ptx)
        assert m, sym
        pt = "f16" if dt == torch.float16 else "bf16"
        body = ptx[m.end(): ptx.find(".entry ", m.end()) if ptx.find(".entry ", m.end()) > 0 else len(ptx)]
        if "wgmma" not in body:                                     # split-K: the zeroing kernel came first
            m = re.search(rf"\.entry {sym}_kernel_1\(", ptx)
            nxt = ptx.find(".entry ", m.end())
            body = ptx[m.end(): nxt if nxt > 0 else len(ptx)]
        bn = knobs[sym]["bn"]
        n = len(re.findall(rf"wgmma\.mma_async\.sp\.sync\.aligned\.m64n{bn}k32\.f32\.{pt}\.{pt}", body))
        per = knobs[sym]["bk"] // 32                                  # k32 steps per ring slot
        assert n >= per and n % per == 0, (sym, n)
        assert "wgmma.mma_async.sync" not in body                  # no dense wgmma in the sparse kernel
        assert "wgmma.fence.sync.aligned" in body
        # the ring is filled by TMA (the default) or, with ws=0, by cp.async (tiles and metadata words)
        assert ("cp.async.bulk.tensor" in body) == bool(knobs[sym].get("tma"))
        assert ("cp.async.cg.shared.global" in body) != bool(knobs[sym].get("tma"))
    assert "ld.local" not in ptx and "st.local" not in ptx         # accumulators in registers
    spills = tc.ptxas_spills(lib, "sm_90a")
    assert len(spills) >= len(SPARSE) and not any(spills.values()), spills   # ptxas spills nothing (3-5 warpgroups)
    assert knobs["wgsp_f16_sync_split"]["ks"] == 3 and knobs["wgsp_f16_decode"]["bn"] == 16


def test_wgmma_sparse_many_tokens_picks_the_tile_with_the_fewest_waves():
    """2:4 at T > 128: 256 x 128 tiles unless a 192- or 128-row tile needs fewer waves of blocks per row of
    work (9216x36864 at T=1024: 288 tiles of 256 rows are 2.2 waves, 384 of 192 rows 2.9)."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import default_sparse_knobs

    pick = {(O, K): default_sparse_knobs(O, K, 1024)["bm"] for O, K in
            ((4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864), (768, 3072))}
    assert pick == {(4096, 4096): 256, (11008, 4096): 256, (4096, 11008): 256, (9216, 36864): 192,
                    (768, 3072): 128}
    assert default_sparse_knobs(11008, 4096, 1024)["ks"] == 1           # enough blocks: no split
    assert default_sparse_knobs(4096, 4096, 128)["bm"] == 128            # T <= 128 unchanged


def test_wgmma_sparse_half_slots_need_tma_and_stay_aligned():
    """``spk=64``: a ring slot of 64 logical columns (A rows of 32 values, 64B swizzle) is a TMA-only mode, and
    its slots are padded to whole 1024-byte units (192 rows: 30208 bytes received, 30720 reserved)."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import ALIGN, resolve
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(1024, 9216, 4096, False, None, "float16")
    ws = resolve(9216, 4096, 1024, dict(bm=192, stages=7, spk=64), spec, sparse=True)
    assert ws.stage_raw() * 2 == 192 * 64 + 128 * 128 + 192 * 8 and ws.stage_elems() * 2 % ALIGN == 0
    assert ws.stage_elems() * 2 - ws.stage_raw() * 2 == 512
    with pytest.raises(KernelError, match="spk=64 needs tma=1"):
        resolve(9216, 4096, 1024, dict(spk=64, ws=0), spec, sparse=True)


def test_wgmma_sparse_ring_fits_and_metadata_offsets():
    """The sparse ring slot (A bm x 64 values, B 2 x bn x 64, metadata bm x 16 B) keeps every tile 1024-byte
    aligned, and the default knobs fit the 227 KB of shared memory at every token count."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import ALIGN, SMEM_LIMIT, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    for T in (1, 8, 16, 32, 64, 128, 200, 1024, 4096):
        for O, K in ((4096, 4096), (11008, 4096), (4096, 11008), (9216, 36864), (768, 768)):
            ws = resolve(O, K, T, {}, MatmulSpec(T, O, K, False, None, "float16"), sparse=True)
            assert ws.smem_bytes() <= SMEM_LIMIT and ws.stages >= 3, (O, K, T)
            assert (ws.stage_elems() * 2) % ALIGN == 0 and (ws.bm * 64 * 2) % ALIGN == 0
            assert (ws.bn * 64 * 2) % ALIGN == 0


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8), (1, 8)])
def test_nm_patterns_with_at_most_2_per_4_columns_use_the_24_layout(n, m):
    """1:4, 2:8, 1:8 put at most 2 non-zeros in every group of 4 columns: ``mma_layout.build`` stores them in the 2:4
    operands (the unused slot of a group holds 0) and the layout decodes back to the weight exactly (fp16, an odd
    row count, empty rows); 4:16 does not fit and is refused."""
    from sparsec.backends.cuda.kernels import mma_layout
    from sparsec.ir.formats import NM
    from sparsec.passes.prune import prune_nm

    g = torch.Generator().manual_seed(n * 10 + m)
    w = prune_nm(torch.randn(37, 128, generator=g), n, m).weight.to(torch.float16)
    w[5] = 0
    lay = mma_layout.build(NM.from_dense(w, n=n, m=m))
    assert lay["sp_values"].shape == (37, 64) and lay["sp_meta"].shape == (3, 8, 8)
    assert torch.equal(mma_layout.to_dense(lay, 37, 128), w.float())
    nib = (lay["sp_meta"].long() & 0xFFFFFFFF).view(-1)
    for sh in range(0, 32, 4):                    # every 4-bit group: two distinct increasing positions
        q = (nib >> sh) & 0xF
        assert bool(((q & 3) < (q >> 2)).all())
    with pytest.raises(ValueError, match="n <= 2"):
        mma_layout.build(NM.from_dense(prune_nm(torch.randn(16, 64, generator=g), 4, 16).weight.half(), n=4, m=16))


def test_wgmma_tail_splits_the_last_wave_along_k():
    """``tail=N`` (opt-in): the tiles past the last full wave of 132 blocks run as N blocks each over a part of K,
    adding into their tiles of Y, which a first launch zeroes (16-byte stores); the other tiles store plainly. With
    an activation or split-K it is refused."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.cuda.kernels.wgmma_gemm import SMS, resolve, tail_split
    from sparsec.backends.kernels.common import KernelError, MatmulSpec

    spec = MatmulSpec(1024, 11008, 4096, False, None, "float16")
    ws = resolve(11008, 4096, 1024, {"tail": 3}, spec, sparse=True)
    assert tail_split(ws) == (2 * SMS, 43 * 8 - 2 * SMS)                 # 344 tiles of 256 x 128: 264 + 80
    assert tail_split(resolve(11008, 4096, 1024, {}, spec, sparse=True)) is None      # off by default
    assert resolve(300, 256, 1024, {"tail": 8}, MatmulSpec(1024, 300, 256, False, None, "float16"),
                   sparse=True).tail == 2                                 # 2 k-tiles: at most 2 blocks per tile
    with pytest.raises(KernelError, match="tail=3"):
        resolve(11008, 4096, 1024, {"tail": 3}, MatmulSpec(1024, 11008, 4096, False, "gelu", "float16"), sparse=True)
    func, _, kn = cuda_matmul_primfunc(_nm24(2000, 768, torch.float16), 1100, bias=True, knobs={"bm": 128, "tail": 3},
                                       name="wgtail", design="wgmma")
    assert kn["tail"] == 3
    lib = tc.build(tvm.IRModule({"wgtail": func}), "sm_90a")
    ptx = tc.ptx(lib, "sm_90a")
    ents = {m.group(1): m.end() for m in re.finditer(r"\.entry (\w+)\(", ptx)}
    zero = ptx[ents["wgtail_kernel"]: ents["wgtail_kernel_1"]] if ents["wgtail_kernel"] < ents["wgtail_kernel_1"] \
        else ptx[ents["wgtail_kernel"]:]
    gemm = ptx[ents["wgtail_kernel_1"]:] if ents["wgtail_kernel"] < ents["wgtail_kernel_1"] \
        else ptx[ents["wgtail_kernel_1"]: ents["wgtail_kernel"]]
    assert "st.global.v4" in zero and "wgmma" not in zero                 # the tail tiles zeroed
    assert "red.global.add.noftz.v4.f16x2" in gemm and "st.global.v4" in gemm    # split tiles add, the rest store


@given(tiles=st.integers(1, 400), nk=st.integers(1, 300), blocks=st.integers(1, 140))
@settings(max_examples=300, deadline=None)
def test_stream_k_fixup_schedule(tiles, nk, blocks):
    """``sk=3``'s schedule (``stream_k_segments``, mirrored by the kernel's index arithmetic): every k-tile of every
    shared tile runs exactly once; a block's partial is the first segment it runs and its finisher segment the last;
    a cut tile has exactly one finisher, which adds exactly the partials of that tile, all from lower-index blocks
    (so a finisher never waits on a block that could be waiting on it), one workspace slot per block."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import stream_k_segments

    sch = stream_k_segments(tiles, nk, blocks, fixup=True)
    assert len(sch) == min(blocks, tiles * nk)
    seen, parts, fins = set(), {}, {}
    for c, segs in enumerate(sch):
        roles = [s[3] for s in segs]
        assert roles.count("part") <= 1 and roles.count("finish") <= 1
        assert "part" not in roles or roles[0] == "part"
        assert "finish" not in roles or roles[-1] == "finish"
        for t, s0, s1, role, a, b in segs:
            assert t * nk <= s0 < s1 <= (t + 1) * nk
            units = set(range(s0, s1))
            assert not units & seen
            seen |= units
            if role == "part":
                assert a == c and s1 < (t + 1) * nk
                parts.setdefault(t, []).append(c)
            elif role == "finish":
                assert t not in fins and b == c and s1 == (t + 1) * nk and s0 > t * nk
                fins[t] = (c, list(range(a, b)))
    assert seen == set(range(tiles * nk))
    assert set(parts) == set(fins)
    for t, ps in parts.items():
        assert fins[t][1] == ps and all(p < fins[t][0] for p in ps)


def test_wgmma_stream_k_fixup_kernel():
    """``sk=3`` (stream-K with a fixup): one launch (no zeroing kernel), no atomics into Y (so an activation is
    allowed), the fp32 partials through a static workspace with ``st.cg`` / ``ld.cg``, the arrival counters read with
    ``ld.acquire.gpu``; split-K or the cp.async main loop are refused with it."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.kernels.common import KernelError

    func, _, kn = cuda_matmul_primfunc(_nm24(2000, 768, torch.float16), 1100, bias=True, activation="gelu",
                                       knobs={"sk": 3, "bm": 128, "stages": 4}, name="wgsk3", design="wgmma")
    assert kn["sk"] == 3 and kn["ks"] == 1
    twin, _, _ = cuda_matmul_primfunc(_nm24(2000, 768, torch.float16), 1100, bias=True, activation="gelu",
                                      knobs={"sk": 3, "bm": 128, "stages": 4}, name="wgsk3b", design="wgmma")
    lib = tc.build(tvm.IRModule({"wgsk3": func, "wgsk3b": twin}), "sm_90a")   # two layers of one spec: one workspace
    ptx = tc.ptx(lib, "sm_90a")
    ents = tc.ptx_entries(ptx)
    assert sorted(ents) == ["wgsk3_kernel", "wgsk3b_kernel"]              # no zero launch
    assert "red.global.add.noftz" not in ptx and "ld.acquire.gpu" in ptx
    assert "st.global.cg.v4.f32" in ptx and "ld.global.cg.v4.f32" in ptx and "wgmma.mma_async.sp" in ptx
    # 144 tiles of 128 x 128: 132 whole, 12 x 6 k-tiles shared by 72 blocks (a slot each: 256 threads x 64 fp32)
    assert len(re.findall(r"__device__ float4 sparsec_skws_\w+\[{}\]".format(72 * 256 * 16),
                          tc.device_source(lib))) == 1
    for bad in ({"sk": 3, "ks": 2}, {"sk": 3, "ws": 0}):
        with pytest.raises(KernelError, match="sk=3"):
            cuda_matmul_primfunc(_nm24(2000, 768, torch.float16), 1100, knobs=bad, design="wgmma")


def test_wgmma_dense_defaults_fill_the_sms_under_one_wave():
    """Dense at 128 < T with fewer tiles than SMs (session 13, ``mid_run1``): split K as at T <= 128 (no activation,
    >= 8 k-tiles per split, at most one wave of blocks), else stream-K with the fixup (``sk=3``: no atomics, so an
    activation may follow) when the grid is at most half a wave or K is deep; 86 tiles over shallow K (11008x4096)
    keep the plain grid, and grids over one wave keep ``sk=2``."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import SMS, default_knobs

    kn = default_knobs(4096, 4096, 256)                  # 32 tiles of 128 x 256
    assert (kn["ks"], kn["sk"]) == (4, 0)
    kn = default_knobs(4096, 4096, 256, "gelu")          # no atomics under an activation
    assert (kn["ks"], kn["sk"]) == (1, 3)
    assert (default_knobs(4096, 11008, 384)["ks"], default_knobs(4096, 11008, 384)["sk"]) == (2, 0)
    kn = default_knobs(9216, 36864, 256)                 # 72 tiles: a 2-way split would be 144 blocks
    assert (kn["ks"], kn["sk"]) == (1, 3)
    assert (default_knobs(11008, 4096, 256)["ks"], default_knobs(11008, 4096, 256)["sk"]) == (1, 0)
    assert default_knobs(9216, 36864, 512)["sk"] == 2 and default_knobs(4096, 4096, 1024)["sk"] == 0
    for O, K in ((768, 768), (768, 3072), (3072, 768), (4096, 4096), (4096, 11008), (9216, 36864)):
        for T in (129, 192, 256, 384, 512, 1024):
            kn = default_knobs(O, K, T)
            tiles = -(-O // kn["bm"]) * -(-T // kn["bn"])
            assert kn["ks"] == 1 or (tiles * kn["ks"] <= SMS and -(-K // 64) // kn["ks"] >= 8)


def test_wgmma_stream_k_walks_equal_shares():
    """``sk=1`` (opt-in, measured slower: docs/cuda.md): min(132, tiles x k-tiles) blocks, each walking its share of
    the tile x k-tile space one tile segment at a time (a serial loop around the main loop, the mbarriers re-armed per
    segment, a proxy fence before TMA refills memory the epilogue read); cut tiles add into Y zeroed by a first launch."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.kernels.common import KernelError

    func, _, kn = cuda_matmul_primfunc(_nm24(2000, 768, torch.float16), 1100, bias=True, knobs={"sk": 1},
                                       name="wgsk", design="wgmma")
    assert kn["sk"] == 1 and kn["ks"] == 1                               # sk replaces the default split-K
    src = tc.device_source(tc.build(tvm.IRModule({"wgsk": func}), "sm_90a"))
    gemm = src[src.index("wgsk_kernel_1(half"):]
    assert re.search(r"for \(int (j\w*) = 0; \1 < \d+; \+\+\1\)", gemm)            # the segment loop
    assert "red_vec_half_global_add_noftz_v4_f16x2" in gemm and "fence_proxy_proxy_async_shared__cta" in gemm
    with pytest.raises(KernelError, match="sk=1"):
        cuda_matmul_primfunc(_nm24(2000, 768, torch.float16), 1100, activation="gelu", knobs={"sk": 1},
                             design="wgmma")


def test_wgmma_dense_many_tokens_shares_the_last_partial_wave():
    """Dense at T > 128 without an activation: ``sk=2`` (whole waves of tiles as usual, the last partial wave's
    k-tiles shared by 132 blocks) when the tiles do not fill whole waves; an explicit split or ws=0 turns it off."""
    from sparsec.backends.cuda.kernels.wgmma_gemm import default_knobs, resolve
    from sparsec.backends.kernels.common import MatmulSpec

    assert default_knobs(9216, 36864, 1024)["sk"] == 2                 # 288 tiles = 2.2 waves
    assert default_knobs(4096, 4096, 1024)["sk"] == 0                  # 128 tiles: one wave
    assert default_knobs(9216, 36864, 1024, "gelu")["sk"] == 0          # an activation cannot follow atomics
    assert default_knobs(9216, 36864, 128)["sk"] == 0
    spec = MatmulSpec(1024, 9216, 36864, False, None, "float16")
    assert resolve(9216, 36864, 1024, {"ks": 2}, spec).sk == 0 and resolve(9216, 36864, 1024, {"ws": 0}, spec).sk == 0
    assert resolve(9216, 36864, 1024, {}, spec).sk == 2
