"""A decoder-style MLP block with shape-aware dispatch (docs/dispatch.md).

`example_inputs()` is the prefill shape (128 tokens), `dispatch_inputs()` the
decode shape (1 token): `sparsec compile` builds one variant per shape, each
with its own format per layer, and the artifact runs the one matching the input.
The weights are already 80% sparse (unstructured), so no --sparsity is needed.
"""
import torch
import torch.nn as nn

torch.manual_seed(0)
D, H = 128, 256


class DecoderMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(D, H)
        self.down = nn.Linear(H, D)
        self.norm = nn.LayerNorm(D)

    def forward(self, x):
        return self.norm(x + self.down(torch.relu(self.up(x))))


model = DecoderMLP()
with torch.no_grad():                          # keep the 20% largest |w| of each weight
    for lin in (model.up, model.down):
        w = lin.weight
        k = int(0.8 * w.numel())
        cut = w.abs().flatten().kthvalue(k).values
        w.mul_((w.abs() > cut).to(w.dtype))


def example_inputs():            # prefill
    return (torch.randn(128, D),)


def dispatch_inputs():           # decode
    return [(torch.randn(1, D),)]
