"""The FL/CL ladder: FL == numpy/torch, CL == FL (numbers) and CL == fast path (cycles)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from sparsec.passes import bdwp
from sparsec.sim.sat import cycle, fast, functional
from sparsec.sim.sat.config import load_config
from sparsec.sim.sat.pipeline import Opts, build_sequence
from sparsec.sim.sat.workloads import Layer, training_gemms

PATTERNS = ["dense", "1:2", "2:4", "2:8", "1:4", "3:4"]


def _small_cfg(rows, cols, double=True, a=4, b=2, out=2):
    return load_config(overrides={"array": {"rows": rows, "cols": cols},
                                  "buffers": {"a_kib": a, "b_kib": b, "out_kib": out, "double_buffer": double},
                                  "tiling": {"t_candidates": [4, 8, 16, 32]}})


def _data(layer, batch, rng):
    if layer.kind == "conv2d":
        ho, wo = layer.out_hw()
        x = rng.standard_normal((batch, layer.cin, layer.h, layer.w))
        dy = rng.standard_normal((batch, layer.cout, ho, wo))
    else:
        x = rng.standard_normal((batch * layer.h, layer.cin))
        dy = rng.standard_normal((batch * layer.h, layer.cout))
    return x, rng.standard_normal(layer.weight_shape), dy


layers = st.one_of(
    st.builds(lambda ci, co, k, s, p, h: Layer("conv", "conv2d", ci, co, k, k, s, min(p, k - 1), h, h),
              st.integers(1, 10), st.integers(1, 10), st.sampled_from([1, 2, 3]), st.integers(1, 2),
              st.integers(0, 1), st.integers(3, 6)),
    st.builds(lambda ci, co, t: Layer("fc", "linear", ci, co, h=t),
              st.integers(1, 20), st.integers(1, 20), st.integers(1, 3)))


@given(layer=layers, pattern=st.sampled_from(PATTERNS), batch=st.integers(1, 2), seed=st.integers(0, 99))
def test_functional_matches_torch(layer, pattern, batch, seed):
    """FL's Y, dX, dW == torch's conv/linear (and their gradients) with the two BDWP masks applied."""
    x, w, dy = _data(layer, batch, np.random.default_rng(seed))
    out = functional.train_step(layer, x, w, dy, pattern)
    p = bdwp.parse_nm(pattern)
    fm, bm = (np.ones_like(w, bool),) * 2 if p.dense else bdwp.masks(w, p)
    tw_ff, tw_bp = torch.from_numpy(w * fm), torch.from_numpy(w * bm)
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
    if layer.kind == "conv2d":
        y = F.conv2d(tx, tw_ff, stride=layer.stride, padding=layer.pad)
        xin = tx.clone().requires_grad_(True)
        F.conv2d(xin, tw_bp, stride=layer.stride, padding=layer.pad).backward(tdy)
        dx = xin.grad
        wr = torch.from_numpy(w).requires_grad_(True)
        F.conv2d(tx, wr, stride=layer.stride, padding=layer.pad).backward(tdy)
        dw = wr.grad
    else:
        y, dx, dw = tx @ tw_ff.T, tdy @ tw_bp, tdy.T @ tx
    np.testing.assert_allclose(out["FF"], y.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["BP"], dx.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["WU"], dw.numpy(), rtol=1e-9, atol=1e-9)


@given(m=st.integers(1, 9), kd=st.integers(1, 24), n=st.integers(1, 7),
       nm=st.sampled_from([(1, 2), (2, 4), (2, 8), (3, 8)]), seed=st.integers(0, 99))
def test_nm_gemm_is_numpy(m, kd, n, nm, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, kd)), rng.standard_normal((kd, n))
    g = bdwp.Groups(kd, 1, *nm)
    mask = bdwp.ff_mask(b.T.copy(), *nm).T       # groups along K for each column
    np.testing.assert_allclose(functional.nm_gemm(a, b, mask, g), a @ (b * mask), rtol=1e-10, atol=1e-10)


def _run_both(lays, batch, pattern, cfg, opts, seed):
    rng = np.random.default_rng(seed)
    data = {}
    for l in lays:
        for ph, v in functional.layer_operands(l, *_data(l, batch, rng), pattern).items():
            data[(l.name, ph)] = v
    seq = build_sequence(training_gemms(lays, batch, bdwp.parse_nm(pattern)), cfg, opts)
    cl = cycle.run(seq, data)
    tl = fast.evaluate(seq)
    return seq, cl, tl, data


@given(layer=layers, pattern=st.sampled_from(PATTERNS), batch=st.integers(1, 2),
       rows=st.sampled_from([4, 8]), cols=st.sampled_from([4, 8]), double=st.booleans(),
       opts=st.sampled_from(["all", "none", "interleave", "pregen", "offline", "interleave,pregen"]),
       seed=st.integers(0, 99))
def test_cycle_level_equals_functional_and_fast(layer, pattern, batch, rows, cols, double, opts, seed):
    lays = [Layer("first", "linear", 4, 8, h=2), layer]      # the first layer has no BP
    cfg = _small_cfg(rows, cols, double)
    seq, cl, tl, data = _run_both(lays, batch, pattern, cfg, Opts.parse(opts), seed)
    for key, (a, b, mask, groups) in data.items():
        if key == ("first", "BP"):
            continue
        np.testing.assert_allclose(cl.outputs[key], functional.nm_gemm(a, b, mask, groups),
                                   rtol=1e-9, atol=1e-9, err_msg=str(key))
    assert cl.total == tl.total
    np.testing.assert_array_equal(cl.comp_end, tl.comp_end)
    np.testing.assert_array_equal(cl.dma_end, tl.dma_end)


def test_cycle_level_trace_and_stalls():
    """A memory-starved config: the CL trace shows DRAM activity and the fast path still agrees."""
    cfg = load_config(overrides={"array": {"rows": 4, "cols": 4},
                                 "buffers": {"a_kib": 1, "b_kib": 1, "out_kib": 1},
                                 "dram": {"channels": 1, "peak_gbps_per_channel": 0.5},
                                 "tiling": {"t_candidates": [4, 8]}})
    lays = [Layer("first", "linear", 4, 8, h=2), Layer("c", "conv2d", 8, 8, 3, 3, 1, 1, 4, 4)]
    seq, cl, tl, _ = _run_both(lays, 1, "2:4", cfg, Opts(), 0)
    assert cl.total == tl.total
    from sparsec.sim.sat.report import phase_stats
    rows = phase_stats(seq, tl)
    assert sum(r.stall for r in rows) > 0
    assert sum(r.cycles for r in rows) == tl.total


@pytest.mark.parametrize("df", ["ws", "os", "is"])
def test_fold_formula_equals_data_movement(df):
    """Each dataflow's fold_cycles equals the cycles its CL fold takes, for partial folds too."""
    from sparsec.sim.sat import dataflow
    d = dataflow.get(df)
    rng = np.random.default_rng(0)
    long = {"ws": (7, 3, 4), "os": (4, 7, 3), "is": (4, 3, 7)}[df]    # the time dimension may exceed 4
    for tm, kc, tn in [(3, 2, 1), (4, 4, 4), (1, 1, 1), (2, 3, 2), long]:
        a = rng.standard_normal((tm, kc * 2))
        vals = rng.standard_normal((kc, tn))
        idx = rng.integers(0, 2, (kc, tn))
        gs = np.arange(kc) * 2
        trace = []
        out, cyc = d.simulate_fold(4, 4, a, vals, idx, gs, 2, trace)
        t = {"ws": tm, "os": kc, "is": tn}[df]
        assert cyc == d.fold_cycles(4, 4, t) == len(trace)
        ref = np.einsum("mkn,kn->mn", a[:, gs[:, None] + idx], vals)
        np.testing.assert_allclose(out, ref)
