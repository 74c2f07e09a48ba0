"""A 3-layer MLP (sparsec model-file convention: `model` + `example_inputs()`)."""
import torch
import torch.nn as nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Linear(256, 512), nn.GELU(),
    nn.Linear(512, 512), nn.ReLU(),
    nn.Linear(512, 10),
)


def example_inputs():
    return (torch.randn(16, 256),)
