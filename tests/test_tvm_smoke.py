"""A broken TVM install must fail CI loudly: build and run one tiny kernel."""
import numpy as np


def test_tvm_builds_and_runs_a_kernel():
    import tvm
    import tvm_ffi
    from tvm import te

    assert tvm.__version__.startswith("0.27")
    assert tvm_ffi.__version__ == "0.1.14.post1"   # 0.1.15 segfaults on IR serialisation
    n = 37
    a = te.placeholder((n,), "float32", name="a")
    b = te.compute((n,), lambda i: a[i] * 2.0 + 1.0, name="b")
    func = te.create_prim_func([a, b])
    lib = tvm.tirx.build(func, target="llvm")
    x = np.random.default_rng(0).standard_normal(n).astype("float32")
    out = tvm.runtime.empty((n,), "float32", tvm.cpu(0))
    lib(tvm.runtime.tensor(x, tvm.cpu(0)), out)
    np.testing.assert_allclose(out.numpy(), x * 2 + 1, rtol=1e-6)
    # IR serialisation works with the pinned tvm-ffi
    text = tvm.ir.save_json(func)
    assert tvm_ffi.structural_equal(tvm.ir.load_json(text), func)
