"""``tiled`` knobs ``split="rows"`` and ``xpipe=1`` (opt-in, both measured slower: docs/cuda.md). ``split="rows"``: the
block's warps take ``warps`` row groups over one K range instead of splitting one row group's K range. ``xpipe=1``:
the next stage's activation fragments are loaded during the current stage (two register sets). Generated and
nvcc-compiled here (no GPU); numerical correctness on the H100 (``DEV_TILED_MODE=rows|xpipe
scripts/gpu/dev_tiledp7.py``: 28/28, 26/26)."""
from __future__ import annotations

import os
import re
import shutil

import pytest

from sparsec.backends.kernels.common import KernelError, MatmulSpec

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"),
                                reason="nvcc not installed")


def test_rows_split_resolves_and_refuses():
    from sparsec.backends.cuda.kernels import tiled

    ts = tiled.resolve(MatmulSpec(32, 9216, 36864, False, None, "float16"), {"split": "rows"})
    per = -(-ts.nstages // ts.ksplit)
    assert ts.split == "rows" and per <= tiled.MAX_PER_ROWS and ts.knobs()["split"] == "rows"
    assert (-(-ts.ngroups // ts.warps)) * ts.ksplit >= tiled.MIN_WARPS // 8       # a block per SM at least
    small = tiled.resolve(MatmulSpec(32, 768, 768, False, None, "float16"), {"split": "rows"})
    assert small.ksplit <= small.nstages                                            # never an empty split
    assert tiled.resolve(MatmulSpec(32, 768, 768, False, "gelu", "float16"), {"split": "rows"}).ksplit == 1
    assert "split" not in tiled.resolve(MatmulSpec(32, 768, 768, False, None, "float16"), {}).knobs()
    with pytest.raises(KernelError, match="split='rows'"):
        tiled.resolve(MatmulSpec(8, 768, 768, False, None, "float16"), {"split": "rows", "code": "bitmap"})


def test_rows_split_compiles_without_the_shared_reduction():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import tiled

    funcs = {}
    for i, (kn, (T, O, K, bias, act)) in enumerate([({"split": "rows", "code": "pos7"}, (32, 1000, 2056, True, None)),
                                                     ({"split": "rows"}, (17, 300, 1000, True, "gelu"))]):
        ts = tiled.resolve(MatmulSpec(T, O, K, bias, act, "float16"), kn)
        funcs[f"rows{i}"] = tiled.generate(ts).with_attr("global_symbol", f"rows{i}")
    lib = tc.build(tvm.IRModule(funcs), "sm_90a")
    ptx = tc.ptx(lib, "sm_90a")
    src = tc.device_source(lib)
    assert len(re.findall(r"mma\.sync\.aligned\.m16n8k16", ptx)) >= 8 and "ld.local" not in ptx
    # each warp stores its own rows: no shared fp32 atomics (the k split's block reduction), global ones for Y
    assert "atom.shared.add.f32" not in ptx and "atomicAdd" in src


def test_xpipe_alternates_two_activation_register_sets():
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import tiled

    spec = MatmulSpec(32, 1000, 2056, True, None, "float16")
    with pytest.raises(KernelError, match="xpipe=1 needs pipe=1"):
        tiled.resolve(spec, {"xpipe": 1, "pipe": 2})
    ts = tiled.resolve(spec, {"xpipe": 1, "code": "pos7"})
    assert ts.knobs()["xpipe"] == 1 and "xpipe" not in tiled.resolve(spec, {}).knobs()
    f = tiled.generate(ts)
    script = f.script()
    assert "xs2" in script and "xs2" not in tiled.generate(tiled.resolve(spec, {"code": "pos7"})).script()
    lib = tc.build(tvm.IRModule({"xp": f.with_attr("global_symbol", "xp")}), "sm_90a")
    ptx = tc.ptx(lib, "sm_90a")
    assert "mma.sync.aligned.m16n8k16" in ptx and "ld.local" not in ptx


def test_minb_sets_the_launch_bounds_and_caps_registers():
    """``minb`` (opt-in, measured: docs/cuda.md) puts ``__launch_bounds__(threads, minb)`` on the kernel (TVM 0.27
    does not carry its own launch-bounds attribute to the split-off device kernels: ``toolchain``'s source
    post-processing does), so ptxas keeps a thread's registers within 64K / (minb * threads); kernels without the
    knob keep their plain bounds."""
    import tvm

    from sparsec.backends.cuda import toolchain as tc
    from sparsec.backends.cuda.kernels import tiled

    funcs = {}
    for name, kn in (("mb0", {"code": "pos7"}), ("mb4", {"code": "pos7", "minb": 4})):
        ts = tiled.resolve(MatmulSpec(16, 1000, 2056, False, None, "float16"), kn)
        funcs[name] = tiled.generate(ts).with_attr("global_symbol", name)
    assert tiled.resolve(MatmulSpec(16, 1000, 2056, False, None, "float16"), {"minb": 4}).knobs()["minb"] == 4
    lib = tc.build(tvm.IRModule(funcs), "sm_90a")
    src = tc.device_source(lib)
    assert re.search(r"__launch_bounds__\(256, 4\) mb4_kernel", src)
    assert re.search(r"__launch_bounds__\(256\) mb0_kernel", src) and "(256, 4) mb0" not in src
    # the cap reached ptxas: registers per thread <= 65536 / (4 * 256)
    text = tc.ptx(lib, "sm_90a")
    m = re.search(r"\.entry mb4_kernel(_1)?\([^{]*?\.maxntid 256, 1, 1\s*\.minnctapersm 4", text, re.S)
    assert m, "no .minnctapersm 4 on the minb=4 kernel"
