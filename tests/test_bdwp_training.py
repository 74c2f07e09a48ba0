"""BDWP training: the custom autograd does FF/BP/WU as specified, agrees with the
simulator's functional model, and trains digits within 2 points of dense."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsec.errors import ParameterError
from sparsec.passes import bdwp
from sparsec.sim.sat import functional
from sparsec.sim.sat.workloads import Layer
from sparsec.training import BDWPConv2d, BDWPLinear, bdwp_wrap, layer_masks


def test_linear_gradients_use_two_masks_and_dense_wu():
    torch.manual_seed(0)
    lin = BDWPLinear(16, 8, pattern="2:4")
    x = torch.randn(5, 16, requires_grad=True)
    gy = torch.randn(5, 8)
    y = lin(x)
    y.backward(gy)
    ff, bp = bdwp.masks(lin.weight.detach(), "2:4")
    w = lin.weight.detach()
    torch.testing.assert_close(y, x.detach() @ (w * ff).T + lin.bias.detach())
    torch.testing.assert_close(x.grad, gy @ (w * bp))            # BP: mask on Wᵀ, not the FF mask
    torch.testing.assert_close(lin.weight.grad, gy.T @ x.detach())   # WU: dense
    assert not torch.equal(ff, bp)


def test_srste_term():
    torch.manual_seed(0)
    lin = BDWPLinear(8, 4, bias=False, pattern="2:4", srste=0.5)
    x, gy = torch.randn(3, 8), torch.randn(3, 4)
    lin(x).backward(gy)
    w = lin.weight.detach()
    torch.testing.assert_close(lin.weight.grad, gy.T @ x + 0.5 * (~lin.mask_ff) * w)


def test_conv_layer_matches_simulator_functional_model():
    """Y, dX, dW of BDWPConv2d == the SAT functional model on the same masks (float64)."""
    torch.manual_seed(0)
    conv = BDWPConv2d(8, 12, 3, stride=2, padding=1, bias=False, pattern="2:8").double()
    conv.refresh_masks()
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    layer = Layer("c", "conv2d", 8, 12, 3, 3, 2, 1, 7, 7)
    fl = functional.train_step(layer, x.detach().numpy(), conv.weight.detach().numpy(), gy.numpy(), "2:8")
    np.testing.assert_allclose(fl["FF"], y.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fl["BP"], x.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fl["WU"], conv.weight.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_wrap_replaces_layers_and_masks_follow_weights():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(8, 4)))
    bdwp_wrap(m, "1:4", skip=("0",))
    assert type(m[0]) is nn.Conv2d and isinstance(m[2][1], BDWPLinear)
    masks = layer_masks(m)
    assert set(masks) == {"2.1"}
    with torch.no_grad():
        m[2][1].weight.mul_(-1).add_(torch.randn(4, 8))
    m.train()
    m(torch.randn(1, 3, 3, 3))
    ff, _ = bdwp.masks(m[2][1].weight.detach(), "1:4")
    assert torch.equal(m[2][1].mask_ff, ff)
    with pytest.raises(ParameterError):
        bdwp_wrap(nn.Linear(4, 4), "unstructured")


def _digits_accuracy(pattern):
    from sklearn.datasets import load_digits
    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    if pattern:
        bdwp_wrap(model, pattern)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        model.train()
        p = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(p), 64):
            b = p[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(X[b]), y[b]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(X[te]).argmax(1) == y[te]).float().mean().item()


def test_digits_bdwp_2_8_within_two_points_of_dense():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dense, sparse = _digits_accuracy(None), _digits_accuracy("2:8")
    finally:
        torch.set_num_threads(threads)
    print(f"digits test accuracy: dense {dense:.4f}, BDWP 2:8 {sparse:.4f}")
    assert dense > 0.95
    assert sparse >= dense - 0.02
