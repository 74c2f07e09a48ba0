"""The ``parallel`` knob's default (``backends/kernels/parallelism.py``): serial for small work,
parallel for large, only where the pool has threads to give; every family still computes the
product (differential against torch ``F.linear`` in fp32/float64, never another sparsec kernel);
the tuner's space still holds both settings."""
import pytest
import torch
import torch.nn.functional as F

from sparsec.backends.kernels import build_matmul, matmul_primfunc
from sparsec.backends.kernels import parallelism as P
from sparsec.ir.formats import BSR, CSR, NM, Bitmap, Dense, GroupQuant


def test_rule_serial_small_parallel_large():
    for fam in P.SERIAL_NS:
        assert not P.parallel_default(fam, 64, 1, 2, rows=8, cols=8)              # tiny: serial
        assert not P.parallel_default(fam, 256, 4, 2, rows=16, cols=16)
        assert P.parallel_default(fam, 3072 * 768, 128, 2, rows=3072, cols=768)  # BERT FFN size, T = 128
        assert P.parallel_default(fam, 768 * 768 // 2, 1, 2, rows=768, cols=768)  # 50% at T = 1
        assert not P.parallel_default(fam, 3072 * 768, 128, 1, rows=3072, cols=768)   # one thread: never
    # monotone in work; the switch is where the estimate crosses PARALLEL_MIN_US
    ts = [P.serial_us("csr", s, 16) for s in (10, 100, 1000, 10000)]
    assert ts == sorted(ts) and ts[0] < ts[-1]
    s_star = next(s for s in range(1, 10 ** 7, 7) if P.serial_us("csr", s, 16) >= P.PARALLEL_MIN_US)
    assert P.parallel_default("csr", s_star, 16, 2)
    assert not P.parallel_default("csr", s_star - 7, 16, 2)
    assert P.PARALLEL_MIN_US == pytest.approx(P.POOL_WAKE_US * P.PARALLEL_SPEEDUP / (P.PARALLEL_SPEEDUP - 1))


def test_stored_entries_counts_what_the_kernel_computes():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g)
    w[torch.rand(32, 64, generator=g) < 0.8] = 0
    assert P.stored_entries(Dense.from_dense(w)) == 32 * 64
    assert P.stored_entries(CSR.from_dense(w)) == int((w != 0).sum())
    assert P.stored_entries(Bitmap.from_dense(w)) == int((w != 0).sum())
    b = BSR.from_dense(w, block=(4, 4))
    assert P.stored_entries(b) == b.indices.numel() * 16


@pytest.fixture
def two_threads(monkeypatch):
    """The rule as on a machine whose pool has 2 threads (whatever this process's pool has)."""
    monkeypatch.setattr(P, "pool_threads", lambda: 2)


def _sparse(o, k, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, k, generator=g)
    w[torch.rand(o, k, generator=g) >= density] = 0
    return w


def test_build_resolves_from_the_weights_nnz(two_threads):
    from sparsec.backends.target import host_target
    t = host_target(2)
    small = CSR.from_dense(_sparse(768, 768, 0.01))          # ~5.9k entries, T = 4: a few us serial
    large = CSR.from_dense(_sparse(768, 768, 0.5, seed=1))   # ~295k entries, T = 64: hundreds of us
    ks = build_matmul(small, 4, target=t)
    kl = build_matmul(large, 64, target=t)
    assert ks.knobs["parallel"] is False
    assert kl.knobs["parallel"] is True
    # same meta (shape, dtypes), different nnz: different kernels, the loop kind shows in the TIR
    fs, _, _ = matmul_primfunc(small, 4, target=t)
    fl, _, _ = matmul_primfunc(large, 4, target=t)
    assert "T.parallel" not in fs.script() and "T.parallel" in fl.script()
    # forced values are kept
    assert build_matmul(small, 4, target=t, knobs={"parallel": True}).knobs["parallel"] is True
    assert build_matmul(large, 64, target=t, knobs={"parallel": False}).knobs["parallel"] is False


def test_one_thread_pool_never_parallel(monkeypatch):
    from sparsec.backends.target import host_target
    monkeypatch.setattr(P, "pool_threads", lambda: 1)
    large = Dense.from_dense(torch.randn(512, 512))
    assert build_matmul(large, 128, target=host_target(2)).knobs["parallel"] is False


def _formats():
    w = _sparse(70, 96, 0.3, seed=3)
    yield "dense", Dense.from_dense(w), w
    yield "csr", CSR.from_dense(w), w
    yield "bitmap", Bitmap.from_dense(w, tile=(8, 8)), w
    yield "bsr", BSR.from_dense(w, block=(4, 4)), w
    nm = NM.from_dense(_nm24(70, 96))
    yield "nm", nm, nm.to_dense()
    gq = GroupQuant.from_dense(w, group=32, bits=4)
    yield "groupquant", gq, gq.to_dense()


def _nm24(o, k):
    w = torch.randn(o, k, generator=torch.Generator().manual_seed(4))
    g = w.reshape(o, k // 4, 4)
    idx = g.abs().topk(2, dim=-1).indices
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return (g * keep).reshape(o, k)


@pytest.mark.parametrize("tokens", [1, 16])
@pytest.mark.parametrize("parallel", [None, True, False])
def test_every_family_matches_torch_under_each_setting(two_threads, tokens, parallel):
    from sparsec.backends.target import host_target
    t = host_target(2)
    x = torch.rand(tokens, 96, generator=torch.Generator().manual_seed(5)) + 0.5
    for name, fo, wd in _formats():
        knobs = None if parallel is None else {"parallel": parallel}
        k = build_matmul(fo, tokens, target=t, knobs=knobs)
        if parallel is not None:
            assert k.knobs["parallel"] is parallel, name
        else:
            assert k.knobs["parallel"] is P.parallel_default(name, P.stored_entries(fo), tokens, 2, fo.rows, fo.cols)
        y = k.run_format(x, fo)
        ref = F.linear(x, wd.float())
        assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4), (name, (y - ref).abs().max())


def test_tuner_space_keeps_both_settings():
    from sparsec.passes.autotune.space import FormatSpace

    for o, k, t, dens in ((64, 64, 4, 0.1), (768, 768, 128, 0.5)):      # rule serial / parallel (or 1 thread)
        w = _sparse(o, k, dens)
        sp = FormatSpace(w, "csr", {}, t)
        vals = sp.choices.get("parallel")
        assert vals is not None and len(vals) == 2 and vals[0] is None, vals
        resolved = {sp._resolved({**sp.defaults, "parallel": v}) for v in vals}
        assert len(resolved) == 2
        assert {dict(r)["parallel"] for r in resolved} == {True, False}


def test_im2col_rule_and_conv_matches_torch(monkeypatch):
    from sparsec.backends.kernels import build_conv2d
    from sparsec.backends.kernels.conv import ConvSpec, im2col_primfunc

    assert not P.im2col_parallel(20_000, cores=2)
    assert P.im2col_parallel(2_000_000, cores=2)
    assert not P.im2col_parallel(2_000_000, cores=1)
    spec = ConvSpec(1, 64, 56, 56, (3, 3), (1, 1), (1, 1))
    assert "T.parallel" in im2col_primfunc(spec, parallel=True).script()
    assert "T.parallel" not in im2col_primfunc(spec, parallel=False).script()
    monkeypatch.setattr(P, "_host_cores", lambda: 2)
    assert "T.parallel" in im2col_primfunc(spec).script()                       # 1.8M elements
    assert "T.parallel" not in im2col_primfunc(ConvSpec(1, 3, 8, 8, (3, 3))).script()
    g = torch.Generator().manual_seed(7)
    w = torch.randn(8, 3, 3, 3, generator=g)
    w[torch.rand(8, 3, 3, 3, generator=g) < 0.7] = 0
    x = torch.randn(1, 3, 9, 9, generator=g)
    fo = CSR.from_dense(w.reshape(8, 27))
    for knobs in (None, {"parallel": True}, {"parallel": False}):
        y = build_conv2d(fo, x.shape, kernel=3, padding=1, knobs=knobs).run_format(x, fo)
        assert torch.allclose(y, F.conv2d(x, w, padding=1), rtol=1e-4, atol=1e-4)
