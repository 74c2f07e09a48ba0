"""An LLM-size MLP (4096 -> 11008 -> 4096, the shapes of a 7B model) serving 64 tokens: a batch of decodes.

Whether a pruned weight runs faster sparse (the unstructured decode kernel, `tiled`) or dense (the `wgmma`
GEMM) at 64 tokens depends on its sparsity, and near the boundary the H100 cost rule can be wrong either way.
`sparsec autotune --target cuda` measures both for each layer, and `sparsec compile` then decides the format by
the measurement (docs/cuda.md, "The format decided by measurement"):

    sparsec autotune examples/llm_mlp.py --target cuda --sparsity 0.6 --emit out/tune_llm
    python scripts/gpu/tune_tiled.py out/tune_llm                  # on the GPU machine
    sparsec autotune --target cuda --import out/tune_llm/results.json
    sparsec compile examples/llm_mlp.py --target cuda --arch sm_90a --sparsity 0.6 --explain
"""
import torch
import torch.nn as nn

torch.manual_seed(0)
D, H, TOKENS = 4096, 11008, 64


class LlmMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(D, H), nn.Linear(H, D)

    def forward(self, x):
        return self.down(self.up(x)) + x


model = LlmMLP().eval()


def example_inputs():
    return (torch.randn(1, TOKENS, D),)
