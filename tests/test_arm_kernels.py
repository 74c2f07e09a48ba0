"""aarch64 kernel families under qemu-aarch64 against eager torch, and NEON in the hot loops.

Every format's kernel is cross-compiled for a Neoverse-N1 (or a drawn core),
linked with the generated C driver and run under qemu-user; the result is
compared with ``torch.nn.functional.linear`` on the format's dense equivalent
(float64, the same elementwise tolerance as the CPU kernel tests). qemu makes
each example cost about a second, so the quick profile draws few; the
thorough profile (``make test-slow``) draws more.
"""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsec.backends.arm import CPUS, arm_target
from sparsec.backends.arm.asm import fmla_lanes, hot_loops, kernel_asm
from sparsec.backends.arm.kernels import kernel_module, run_matmul_qemu
from sparsec.backends.arm.qemu import tool
from sparsec.errors import ConfigError, ParameterError
from test_kernels_cpu import PARAMS, assert_matches, pack

FORMATS = ["dense", "csr", "bitmap", "nm", "bsr", "groupquant"]
EXAMPLES = 3 if settings().max_examples <= 25 else 30


def _case(kind, params, rows, cols, tokens, density, seed, pattern, bias, activation, cpu):
    fmt = pack(kind, seed, rows, cols, density, pattern, params)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(tokens, cols, generator=g)
    b = torch.randn(rows, generator=g) if bias else None
    y = run_matmul_qemu(fmt, x, b, activation, cpu=cpu)
    assert_matches(y, x, fmt.to_dense(), b, activation)


@pytest.mark.parametrize("kind", FORMATS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kernel_under_qemu(kind, data):
    params = data.draw(PARAMS[kind], label="params")
    rows = data.draw(st.integers(1, 24), label="rows")
    cols = data.draw(st.integers(1, 40), label="cols")
    tokens = data.draw(st.sampled_from([1, 3, 9, 20]), label="tokens")
    density = data.draw(st.sampled_from([0.05, 0.3, 0.7]), label="density")
    pattern = data.draw(st.sampled_from(["random", "random", "empty_rows", "zero", "dense"]), label="pattern")
    bias = data.draw(st.booleans(), label="bias")
    act = data.draw(st.sampled_from([None, "relu", "gelu", "silu"]), label="activation")
    cpu = data.draw(st.sampled_from(["neoverse-n1", "cortex-a76", "cortex-a55"]), label="cpu")
    _case(kind, params, rows, cols, tokens, density, data.draw(st.integers(0, 99), label="seed"), pattern, bias,
          act, cpu)


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_every_cpu_runs(cpu):
    """One 2:4 kernel per supported core (SVE on neoverse-v1; qemu's `max` core has every feature)."""
    _case("nm", {"nm": (2, 4)}, 17, 32, 9, 0.5, 3, "random", True, "relu", cpu)


def test_fp16_kernel_under_qemu():
    from sparsec.ir.formats import NM

    w = pack("nm", 5, 16, 32, 0.5, "random", {"nm": (2, 4)}).to_dense()
    fmt = NM.from_dense(w.half(), n=2, m=4)
    x = torch.randn(8, 32).half()
    y = run_matmul_qemu(fmt, x, None, None)
    ref = torch.nn.functional.linear(x.double(), fmt.to_dense().double())
    assert y.dtype == torch.float16
    assert float((y.double() - ref).abs().max()) <= 1e-2 * float(ref.abs().max())


# -- the generated code uses NEON --------------------------------------------------------------

def _weight(kind, rows=64, cols=64):
    params = {"dense": {}, "csr": {}, "bitmap": {"tile": (8, 8)}, "nm": {"nm": (2, 4)},
              "bsr": {"block": (4, 4)}, "groupquant": {"group": 8, "bits": 8}}[kind]
    return pack(kind, 0, rows, cols, 0.3, "random", params)


@pytest.mark.parametrize("kind", FORMATS)
def test_hot_loop_has_neon_fma(kind):
    """The innermost loop that does the work is NEON: 4-lane fp32 FMAs (fmla v.4s)."""
    mod, name, _, knobs = kernel_module(_weight(kind), 64, cpu="neoverse-n1")
    asm = kernel_asm(mod, name)
    loops = hot_loops(asm)
    assert loops, f"{kind}: no loop found in the assembly of {name}"
    best = max(loops, key=lambda lp: len(fmla_lanes(lp.body)))
    lanes = fmla_lanes(best.body)
    assert lanes and all(n == 4 for n in lanes), (f"{kind} (knobs {knobs}): hottest loop has fmla lanes "
                                                   f"{lanes}:\n" + "\n".join(best.body))


def test_hot_loop_fp16_loads_8_lanes_and_accumulates_in_fp32():
    """fp16 weights/activations: 8-lane fp16 loads widened (fcvtl/fcvtl2 .8h -> 2x .4s) into
    4-lane fp32 FMAs — the families accumulate in fp32 by design (common.loader)."""
    from sparsec.ir.formats import Dense

    w = Dense.from_dense(torch.randn(32, 64).half())
    mod, name, _, _ = kernel_module(w, 64, cpu="neoverse-n1")
    work = [lp for lp in hot_loops(kernel_asm(mod, name)) if fmla_lanes(lp.body)]
    assert work, "no fmla in any loop of the fp16 dense kernel"
    body = "\n".join(work[0].body)
    assert re.search(r"fcvtl2\s+v\d+\.4s, v\d+\.8h", body) and set(fmla_lanes(work[0].body)) == {4}


def test_asm_checker_can_fail():
    """The checker itself: scalar FMAs in a loop are not NEON."""
    asm = ".LBB0_1:\n\tfmadd s0, s1, s2, s0\n\tsubs x8, x8, #1\n\tb.ne .LBB0_1\n"
    (lp,) = hot_loops(asm)
    assert fmla_lanes(lp.body) == []
    asm2 = ".LBB0_1:\n\tfmla v0.4s, v1.4s, v2.s[0]\n\tsubs x8, x8, #1\n\tb.ne .LBB0_1\n"
    assert fmla_lanes(hot_loops(asm2)[0].body) == [4]


# -- errors ---------------------------------------------------------------------------------

def test_unknown_cpu_is_refused():
    with pytest.raises(ParameterError, match="cortex-x9.*neoverse-n1"):
        arm_target("cortex-x9")


def test_missing_tool_names_the_package(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda c: None)
    with pytest.raises(ConfigError, match="qemu-user"):
        tool("qemu-aarch64", "qemu-user")
