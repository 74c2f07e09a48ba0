"""A dense LLM-style MLP at prefill: 448 tokens through 5120 -> 13824 (GELU) -> 5120 (the shapes of a 13B model).

Under `--target cuda --arch sm_90a` both linears run the dense warpgroup-MMA GEMM (`wgmma`). At 448 tokens the
down projection is 80 tiles on 132 SMs: the default grid, a split of K or stream-K (`sk=3`) can each be the
fastest (docs/cuda.md, "Stream-K with a fixup"), so measure them on the GPU:

    sparsec autotune examples/prefill_mlp.py --target cuda --emit out/tune_prefill
    python scripts/gpu/tune_tiled.py out/tune_prefill                  # on the GPU machine
    sparsec autotune --target cuda --import out/tune_prefill/results.json
    sparsec compile examples/prefill_mlp.py --target cuda --arch sm_90a --explain
"""
import torch
import torch.nn as nn

torch.manual_seed(0)
D, H, TOKENS = 5120, 13824, 448


class PrefillMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(D, H), nn.Linear(H, D)

    def forward(self, x):
        return self.down(nn.functional.gelu(self.up(x))) + x


model = PrefillMLP().eval()


def example_inputs():
    return (torch.randn(1, TOKENS, D),)
