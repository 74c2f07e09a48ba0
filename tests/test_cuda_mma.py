"""design="mma": split-K, staged epilogue, rasterisation knobs and the shared knob validation (build only;
the numerics are checked vs F.linear on the GPU by scripts/gpu/dev_mma.py)."""
from __future__ import annotations

import re

import pytest
import torch


def _dense(O, K, dt=torch.float16):
    from sparsec.ir.formats import Dense

    return Dense.from_dense(torch.zeros(O, K, dtype=dt))


def _nm24(O, K, dt=torch.float16):
    from sparsec.ir.formats import NM

    w = torch.zeros(O, K)
    w[:, 0::4] = 1.0
    w[:, 2::4] = -1.0
    return NM.from_dense(w.to(dt), n=2, m=4)


def test_check_knobs_is_shared_by_both_resolvers():
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.cuda.kernels.matmul import KNOBS, check_knobs
    from sparsec.backends.kernels.common import KernelError as KE

    assert check_knobs("x", {"warps": 4, "tn": None}, KNOBS) == {"warps": 4, "tn": None}
    with pytest.raises(KE, match=r"^x kernel: unknown knob 'bm'"):
        check_knobs("x", {"bm": 64}, KNOBS)
    with pytest.raises(KE, match=r"cuda mma kernel: knob ks=5 is not one of"):
        cuda_matmul_primfunc(_dense(64, 64), 128, design="mma", knobs={"ks": 5})
    with pytest.raises(KE, match=r"cuda dense kernel: knob warps=3 is not one of"):
        cuda_matmul_primfunc(_dense(64, 64), 8, knobs={"warps": 3})
    with pytest.raises(KE, match=r"cuda mma kernel: unknown knob 'warps'"):
        cuda_matmul_primfunc(_dense(64, 64), 8, design="mma", knobs={"warps": 4})


def test_split_k_defaults_and_refusals():
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc
    from sparsec.backends.cuda.kernels.mma_gemm import default_knobs
    from sparsec.backends.kernels.common import KernelError as KE

    # few 128x128 tiles at T=128: split along K; T >= 512 and small shapes: no split
    assert default_knobs(4096, 4096, 128)["ks"] == 8 and default_knobs(4096, 4096, 128)["bm"] == 128
    assert default_knobs(4096, 4096, 1024)["ks"] == 1
    assert default_knobs(100, 200, 130)["ks"] == 1
    # an activation cannot follow atomics: no split by default, refused when asked for
    assert default_knobs(4096, 4096, 128, activation="gelu")["ks"] == 1
    with pytest.raises(KE, match="activation"):
        cuda_matmul_primfunc(_dense(4096, 4096), 128, activation="relu", design="mma", knobs={"ks": 2})
    # no empty K range: 3 k-tiles split 8 ways -> 3 splits
    *_, kn = cuda_matmul_primfunc(_dense(64, 96), 128, design="mma",
                                  knobs=dict(bm=128, bn=128, bk=32, wm=2, wn=4, stages=3, ks=8))
    assert kn["ks"] == 3
    # the staged epilogue tile shares the ring: 128x128 fits only with <= 3 stages
    with pytest.raises(KE, match="shared memory"):
        cuda_matmul_primfunc(_dense(64, 96), 128, design="mma",
                             knobs=dict(bm=128, bn=128, bk=32, wm=2, wn=4, stages=4))


@pytest.fixture(scope="module")
def ptx_bodies():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import cuda_matmul_primfunc

    T128 = dict(bm=128, bn=128, bk=32, wm=2, wn=4, stages=3)
    funcs = {
        "ks_f16": cuda_matmul_primfunc(_dense(1024, 512), 130, bias=True, design="mma", name="ks_f16",
                                       knobs=dict(T128, ks=4))[0],
        "ks_bf16": cuda_matmul_primfunc(_nm24(1024, 512, torch.bfloat16), 130, design="mma", name="ks_bf16",
                                        knobs=dict(T128, ks=2))[0],
        "ks_odd": cuda_matmul_primfunc(_dense(1003, 520), 77, bias=True, design="mma", name="ks_odd",
                                       knobs=dict(T128, ks=3))[0],
        "one_f16": cuda_matmul_primfunc(_dense(1024, 512), 1030, activation="gelu", design="mma", name="one_f16",
                                        knobs=dict(T128, gm=4))[0],
    }
    ptx = tc.ptx(tc.build(tvm.IRModule(funcs), "sm_90"), "sm_90")
    ents = list(re.finditer(r"\.entry (\w+)\(", ptx))
    return {m.group(1): ptx[m.end(): ents[i + 1].start() if i + 1 < len(ents) else len(ptx)]
            for i, m in enumerate(ents)}


def test_split_k_zeroes_y_then_adds_with_vector_atomics(ptx_bodies):
    for name, ty in (("ks_f16", "f16x2"), ("ks_bf16", "bf16x2")):
        ks = {n: b for n, b in ptx_bodies.items() if n.startswith(name)}
        assert len(ks) == 2, ks.keys()                        # a zeroing launch + the GEMM
        gemm = next(b for b in ks.values() if "mma." in b)
        zero = next(b for b in ks.values() if "mma." not in b)
        # 16-byte stores (T*O is a multiple of 8), no atomics
        assert re.search(r"st\.global\.v4\.(b|u)32", zero) and not re.search(r"\sred\.", zero)
        assert not re.search(r"st\.global\.(b|u)16", zero)
        assert re.search(rf"red\.global\.add\.noftz\.v4\.{ty}", gemm)
        assert "st.global" not in gemm                         # every output through the reduction
    odd_zero = next(b for n, b in ptx_bodies.items() if n.startswith("ks_odd") and "mma." not in b)
    assert re.search(r"st\.global\.(b|u)16", odd_zero)       # T*O % 8 != 0: element stores
    odd = next(b for n, b in ptx_bodies.items() if n.startswith("ks_odd") and "mma." in b)
    assert "red.global.add.noftz.v4" not in odd                # O % 8 != 0: element atomics
    assert re.search(r"atom(\.global)?\.add\.noftz\.f16\s", odd)


def test_unsplit_kernel_stores_16_byte_rows(ptx_bodies):
    one = [b for n, b in ptx_bodies.items() if n.startswith("one_f16")]
    assert len(one) == 1                                       # no zeroing launch
    assert "st.global.v4" in one[0] and not re.search(r"\s(red|atom)\.", one[0])
