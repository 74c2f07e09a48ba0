"""``tiled`` with ``mma="wg"`` and ``sp=1``: each 128-column stage decoded into the 2:4 sparse ``wgmma`` operand
(``wgmma.mma_async.sp``, 64 compressed columns: one 128B-swizzled atom per 64 rows), with the entries past the
second of a group of 4 (the residual) added on CUDA cores.

The layout (``tiled_layout.build_wsp``) is checked by an emulation of what the kernel and the tensor core do,
written here from the ISA and the kernel's documented arithmetic, not from the layout code: the compressed stage
buffer rebuilt with the kernel's scatter addresses and read back through the swizzle; each lane's metadata word
(sparsity selector 0: lanes ``4g`` and ``4g + 1`` give the 16-column blocks ``2 kk`` and ``2 kk + 1`` of k32 step
``kk`` for rows ``g`` (bits 0..15) and ``g + 8`` (bits 16..31), 4 bits per group of 4 columns: two *distinct
increasing* positions) expands the compressed rows; the residual words add ``value * X[:, column]`` to the row pair
their quad owns. The kernels are generated and nvcc-compiled for sm_90a (PTX checked); numerical correctness on an
H100 is ``scripts/gpu/dev_tiledp7.py`` with ``DEV_TILED_MODE=wsp`` (``benchmarks/results/dev/wsp_run*``).
"""
from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

HAS_NVCC = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")
SC = 128


def _swizzled(r, k):
    """Half index of element (row r, column k) of a 64-column atom in the 128B-swizzled K-major layout."""
    return r * 64 + (((k >> 3) ^ (r & 7)) << 3) + (k & 7)


def _emulate_wsp(lay, O, K, X, code, SC=SC):
    """Y = X @ W^T as the sp=1 kernel computes it (float64); a stage of ``SC`` columns is ``SC / 128`` compressed
    64-column atoms, the strip's slot ``p`` at element ``(p >> 10) * 4096 + w * 1024 + (p & 1023)``."""
    from sparsec.backends.cuda.kernels import tiled_layout as TL

    nst, ngr = -(-K // SC), -(-O // 16)
    NA = SC // 128
    Xp = torch.zeros(X.shape[0], nst * SC, dtype=torch.float64)
    Xp[:, :K] = X.double()
    Y = torch.zeros(X.shape[0], -(-ngr // 4) * 64, dtype=torch.float64)
    ptr = lay["tc_ptr"].long()
    n = int(ptr[-1]) * 8
    slots = TL.pos7_slots(lay) if code == "pos7" else TL.wg_slot_of_offset(lay["tc_pos"][:n].long())
    vals = lay["tc_values"][:n].double()
    meta = lay["tc_meta"].long() & 0xFFFFFFFF
    assert meta.numel() == ngr * nst * 16 * (SC // 32)
    res, rptr = lay["tc_res"].long() & 0xFFFFFFFF, lay["tc_rptr"].long()
    r = torch.arange(64).view(64, 1)
    k = torch.arange(64).view(1, 64)
    for b in range(-(-ngr // 4)):
        for s in range(nst):
            buf = torch.zeros(NA * 4096, dtype=torch.float64)
            for w in range(4):
                g = 4 * b + w
                if g < ngr:
                    lo, hi = int(ptr[g * nst + s]) * 8, int(ptr[g * nst + s + 1]) * 8
                    p = slots[lo:hi]
                    assert p.numel() == 0 or int(p.max()) < NA * 1024     # inside the strip's quarters of the atoms
                    buf[(p >> 10) * 4096 + w * 1024 + (p & 1023)] = vals[lo:hi]
            Ac = torch.cat([buf[a * 4096 + _swizzled(r, k)] for a in range(NA)], 1)   # [64 rows, SC/2 compressed]
            A = torch.zeros(64, SC, dtype=torch.float64)
            for w in range(4):
                g = min(4 * b + w, ngr - 1)
                for lane in range(32):
                    if lane % 4 >= 2:
                        continue                                            # selector 0: lanes 4g, 4g + 1
                    for kk in range(SC // 32):
                        word = int(meta[((g * nst + s) * 16 + (lane // 4) * 2 + lane % 2) * (SC // 32) + kk])
                        for hh in range(2):
                            row = 16 * w + lane // 4 + 8 * hh
                            for j in range(4):
                                nib = (word >> (16 * hh + 4 * j)) & 15
                                i0, i1 = nib & 3, nib >> 2
                                assert i0 < i1, "metadata positions must be distinct and increasing"
                                G = 8 * kk + 4 * (lane % 2) + j                # group of 4 columns in the stage
                                A[row, 4 * G + i0] += Ac[row, 2 * G]
                                A[row, 4 * G + i1] += Ac[row, 2 * G + 1]
            Y[:, b * 64:(b + 1) * 64] += Xp[:, s * SC:(s + 1) * SC] @ A.t()
            for w in range(4):
                g = 4 * b + w
                if g >= ngr:
                    continue
                for i in range(int(rptr[g * nst + s]), int(rptr[g * nst + s + 1])):
                    for q in range(8):
                        e = int(res[i * 8 + q])
                        v = torch.tensor([e >> 16], dtype=torch.int32).to(torch.int16).view(torch.float16).double()
                        row = b * 64 + 16 * w + q + 8 * ((e >> 8) & 1)
                        Y[:, row] += v[0] * Xp[:, s * SC + (e & 255)]
    return Y[:, :O]


@settings(max_examples=10, deadline=None)
@given(O=st.integers(1, 140), K=st.integers(1, 40).map(lambda v: v * 8), T=st.integers(1, 4),
       sparsity=st.sampled_from([0.0, 0.5, 0.7, 0.9, 0.99]), code=st.sampled_from(["pos", "pos7"]),
       sc=st.sampled_from([128, 256]), seed=st.integers(0, 2 ** 16))
def test_wsp_layout_is_the_sparse_wgmma_operand_plus_residual(O, K, T, sparsity, code, sc, seed):
    from sparsec.backends.cuda.kernels import tiled_layout as TL
    from sparsec.ir.formats import CSR

    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(O, K, generator=g) * (torch.rand(O, K, generator=g) >= sparsity)).half()
    if O > 2:
        w[O // 2] = 0                                           # an empty row
    x = torch.randn(T, K, generator=g).half()
    lay, names = TL.build_for(CSR.from_dense(w), {"mma": "wg", "rt": 1, "sc": sc, "code": code, "sp": 1})
    assert names[-3:] == TL.SP_BUFFERS and set(names) == set(lay)
    got = _emulate_wsp(lay, O, K, x, code, sc)
    torch.testing.assert_close(got, x.double() @ w.double().t(), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(TL.wsp_to_dense(lay, O, K, sc, code), w.double(), atol=0, rtol=0)


def test_wsp_residual_is_the_third_and_fourth_of_a_group():
    """A row with groups holding 0..4 non-zeros: exactly the non-zeros past the second of a group (column order)
    are residual words, each in the word of its row pair; at most 2 per group reach the compressed stage."""
    from sparsec.backends.cuda.kernels import tiled_layout as TL

    w = torch.zeros(20, 128, dtype=torch.float16)
    counts = [0, 1, 2, 3, 4, 1, 3, 2]
    for gi, c in enumerate(counts):
        w[3, 4 * gi: 4 * gi + c] = torch.arange(1, c + 1, dtype=torch.float16) + gi
    w[17, 125:128] = torch.tensor([5, 6, 7], dtype=torch.float16)     # strip 1, rows g = 1, h = 0
    lay = TL.build_wsp(w, SC, "pos7")
    res = lay["tc_res"].long() & 0xFFFFFFFF
    rp = lay["tc_rptr"].long()
    # strip 0: the 4 residual entries all in row 3 (quad 3): 4 rows of 8 words; strip 1: one entry, one row
    assert rp.tolist() == [0, 4, 5]
    got = []
    for i in range(int(rp[-1])):
        for q in range(8):
            e = int(res[i * 8 + q])
            if e >> 16:
                seg = 0 if i < int(rp[1]) else 1
                got.append((16 * seg + q + 8 * ((e >> 8) & 1), e & 255))
    want = [(3, c) for gi, c_ in enumerate(counts) for c in range(4 * gi + 2, 4 * gi + c_)] + [(17, 127)]
    assert sorted(got) == sorted(want)


def _spec(T=32, O=4096, K=4096, act=None):
    from sparsec.backends.kernels.common import MatmulSpec

    return MatmulSpec(T, O, K, False, act, "float16")


def test_wsp_resolve_defaults_and_refusals():
    from sparsec.backends.cuda.kernels.tiled import resolve
    from sparsec.backends.kernels.common import KernelError

    ts = resolve(_spec(), {"mma": "wg", "sp": 1})
    kn = ts.knobs()
    assert (kn["sc"], kn["sp"], kn["rr"], kn["rp"]) == (128, 1, 0, 2)           # 128-column stages, residual after
    assert resolve(_spec(), kn).knobs() == kn
    assert resolve(_spec(), {"mma": "wg", "sp": 1, "sc": 256}).knobs()["sc"] == 256      # two compressed atoms
    bad = [({"mma": "wg", "sp": 1, "sc": 64}, "sc=128"), ({"mma": "wg", "sc": 256}, "sp=1"), ({"sc": 256}, "sp=1"), ({"mma": "wg", "sp": 1, "xa": 1}, "xa=0"),
           ({"mma": "wg", "sp": 1, "clear": "unscatter"}, "clear"), ({"mma": "wg", "rr": 1}, "sp=1"),
           ({"mma": "wg", "rp": 4}, "sp=1"), ({"mma": "wg", "sp": 1, "wip": 1, "rr": 1}, "wip=0"),
           ({"sp": 1}, "mma='wg'"), ({"mma": "wg", "sp": 1, "rp": 3}, "rp")]
    for kn_, msg in bad:
        with pytest.raises(KernelError, match=msg):
            resolve(_spec(), kn_)


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not installed")
def test_wsp_kernels_use_sparse_warpgroup_mma():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.ir.formats import Bitmap

    g = torch.Generator().manual_seed(3)
    w = (torch.randn(304, 1000, generator=g) * (torch.rand(304, 1000, generator=g) > 0.85)).half()
    confs = {"wsp_p7_split": (w, 32, False, None, {"mma": "wg", "code": "pos7", "sp": 1, "ksplit": 4}),
             "wsp_pos_rr_gelu": (w[:300], 17, True, "gelu", {"mma": "wg", "sp": 1, "rr": 1, "wgs": 1, "rp": 4}),
             "wsp_bf16_t8": (w.bfloat16(), 8, True, None, {"mma": "wg", "sp": 1, "rr": 1, "ra": 1, "xd": 1}),
             "wsp_s256": (w, 16, False, None, {"mma": "wg", "sp": 1, "sc": 256, "pb": 2, "wgs": 1})}
    funcs, knobs = {}, {}
    for sym, (wt, T, bias, act, kn) in confs.items():
        funcs[sym], args, knobs[sym] = cuda_matmul_primfunc(Bitmap.from_dense(wt, tile=(8, 32)), T, bias=bias,
                                                            activation=act, knobs=kn, name=sym, design="tiled")
        assert [a.name for a in args][3:6] == ["tc_meta", "tc_res", "tc_rptr"]
    lib = tc.build(tvm.IRModule(funcs), "sm_90a")
    bodies = tc.ptx_entries(tc.ptx(lib, "sm_90a"))
    for sym, kn in knobs.items():
        (body,) = [b for n, b in bodies.items() if n.startswith(sym + "_kernel") and "wgmma" in b]
        pt = "bf16" if "bf16" in sym else "f16"
        # four k32 steps per 128-column stage on the sparse tensor cores, each with its lane's metadata register
        sp_ops = re.findall(rf"wgmma\.mma_async\.sp\.sync\.aligned\.m64n{kn['tn']}k32\.f32\.{pt}\.{pt} "
                            r"\{[^}]*\}, %rd\d+, %rd\d+, %r\d+, 0,", body)
        assert len(sp_ops) == kn["sc"] // 32, sym
        assert "wgmma.mma_async.sync" not in body, sym                     # no dense wgmma left
        assert re.search(r"ld\.shared\.u16", body), sym                     # the residual's activations
    assert all(v == 0 for v in tc.ptxas_spills(lib, "sm_90a").values())


@pytest.mark.skipif(not HAS_NVCC, reason="nvcc not installed")
def test_model_at_16_tokens_runs_wsp_with_its_layout():
    """A 90 %-sparse linear at 16 tokens under ``--arch sm_90a``: the planner's tiled kernel decodes into the 2:4
    sparse operand (``sp=1``), and its layout constants (tag ``.wsp``) are ``build_for`` of the stored weight."""
    import torch.nn as nn

    import sparsec
    from sparsec.backends.cuda.kernels import tiled_layout as TL

    torch.manual_seed(0)
    m = nn.Linear(2048, 1024).eval()          # large enough for the wg cost rule to pick tiled over dense
    with torch.no_grad():
        w = m.weight
        w[w.abs() <= w.abs().flatten().kthvalue(int(0.9 * w.numel())).values] = 0
    c = sparsec.compile(m, (torch.randn(1, 16, 2048),), target="cuda", arch="sm_90a")
    (k,) = c.compiled.kernels.values()
    assert k["design"] == "tiled" and k["knobs"]["mma"] == "wg" and k["knobs"]["sp"] == 1, k
    lay, names = TL.build_for(c.graph.constant("weight").value, k["knobs"])
    assert names[-3:] == TL.SP_BUFFERS
    for b in names:
        assert torch.equal(c.compiled.consts[f"weight/tiled.1.{k['knobs']['sc']}.{k['knobs']['code']}.wsp.{b}"],
                           lay[b])
