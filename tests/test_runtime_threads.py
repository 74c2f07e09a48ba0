"""A compiled CPU model's call runs no torch operation that can start torch's OpenMP workers: after a
parallel region they spin for milliseconds, and on a machine with few cores they take a core from TVM's
pool (BERT-base x2 at 90 % on the 2-core CI box: 3.6 ms per call with the serial copies, 11.6 ms with
``clone`` of the output; docs/kernels_cpu.md "Threads")."""
import numpy as np
import pytest
import torch

import sparsec
from sparsec.backends.runtime import serial_clone, serial_copy


@pytest.mark.parametrize("dt", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.uint8])
def test_serial_copy_and_clone_are_exact(dt):
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(3, 5, 7, generator=g) * 4).to(dt)
    b = torch.empty_like(a)
    serial_copy(b, a)
    assert torch.equal(a, b)
    c = serial_clone(a)
    assert c.dtype == a.dtype and c.shape == a.shape and torch.equal(a, c)
    assert c.data_ptr() != a.data_ptr()
    a.view(torch.uint8).fill_(0) if dt != torch.bool else a.fill_(False)
    assert torch.equal(c, b)                                  # the clone owns its memory
    s = torch.tensor(2.5)
    assert torch.equal(serial_clone(s), s)                    # 0-d
    assert serial_clone(torch.empty(0, 4)).shape == (0, 4)


def test_serial_copy_falls_back_for_strided_sources():
    a = torch.arange(24.0).view(4, 6).t()                     # not contiguous
    b = torch.empty(6, 4)
    serial_copy(b, a)
    assert torch.equal(b, a)


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(256, 512)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_a_call_uses_no_torch_copy(monkeypatch):
    m = _Linear().eval()
    with torch.no_grad():                                     # 80 % zeros: a sparse format is chosen
        w = m.fc.weight
        w.mul_(torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) > 0.8)
    x = torch.randn(64, 256)                                  # 64x512 output: torch would copy it in parallel
    c = sparsec.compile(m, (x,), tuning_db=False)
    want = m(x).detach()
    c(x)
    calls = []
    for name in ("clone", "copy_", "contiguous"):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    out = c(x)[0]
    out_np = c(x.numpy())[0]
    monkeypatch.undo()
    assert calls == [], f"torch ops in a compiled call: {calls}"
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    assert isinstance(out_np, np.ndarray)
    np.testing.assert_allclose(out_np, want.numpy(), rtol=1e-4, atol=1e-4)
    out2 = c(x)[0]
    assert out2.data_ptr() != out.data_ptr()                  # every call returns its own tensor
