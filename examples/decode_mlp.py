"""An LLM-style MLP at decode time: 16 tokens through two linears (no activation between them).

At 70 % sparsity under `--target cuda --arch sm_90a` both linears run the unstructured decode kernel
(`tiled`, warpgroup MMA); its split of K and variant can be measured on the GPU (docs/cuda.md, "Autotuning the
tiled kernel"):

    sparsec autotune examples/decode_mlp.py --target cuda --sparsity 0.7 --emit out/tune_mlp
    python scripts/gpu/tune_tiled.py out/tune_mlp                     # on the GPU machine
    sparsec autotune --target cuda --import out/tune_mlp/results.json
    sparsec compile examples/decode_mlp.py --target cuda --arch sm_90a --sparsity 0.7 --explain
"""
import torch
import torch.nn as nn

torch.manual_seed(0)
D, H, TOKENS = 1024, 2816, 16


class DecodeMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(D, H), nn.Linear(H, D)

    def forward(self, x):
        return self.down(self.up(x)) + x


model = DecodeMLP().eval()


def example_inputs():
    return (torch.randn(1, TOKENS, D),)
