"""Test models: small hand-written ones and real `transformers` architectures
built from small configs with random weights (no downloads)."""
from __future__ import annotations

import torch
import torch.nn as nn


class MLP(nn.Module):
    def __init__(self, d_in=32, hidden=64, d_out=10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.nn.functional.gelu(self.fc1(x)))))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.nn.functional.avg_pool2d(torch.relu(self.bn2(self.conv2(x))), 2, ceil_mode=True)
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.log_softmax(self.fc(x), dim=-1)


class EncoderBlock(nn.Module):
    """A pre-LN transformer encoder block written out by hand."""

    def __init__(self, d=32, heads=4, ff=64):
        super().__init__()
        self.h, self.d = heads, d
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (y.view(b, t, self.h, d // self.h).transpose(1, 2) for y in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (d // self.h) ** 0.5
        att = att.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.ff2(torch.nn.functional.silu(self.ff1(self.ln2(x))))


def bert(layers=2):
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    torch.manual_seed(0)
    return BertModel(cfg).eval(), (torch.randint(0, 100, (2, 12)),)


def vit():
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, attn_implementation="eager")
    torch.manual_seed(0)
    return ViTModel(cfg).eval(), (torch.randn(2, 3, 32, 32),)


def resnet():
    from transformers import ResNetConfig, ResNetModel
    cfg = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                       layer_type="bottleneck")
    torch.manual_seed(0)
    return ResNetModel(cfg).eval(), (torch.randn(2, 3, 32, 32),)


def gpt2():
    from transformers import GPT2Config, GPT2Model
    cfg = GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                     use_cache=False, attn_implementation="eager")
    torch.manual_seed(0)
    return GPT2Model(cfg).eval(), (torch.randint(0, 100, (2, 12)),)


def hand_models():
    torch.manual_seed(0)
    mask = torch.ones(2, 8)
    mask[1, 5:] = 0
    return {
        "mlp": (MLP().eval(), (torch.randn(4, 32),)),
        "cnn": (SmallCNN().eval(), (torch.randn(2, 3, 16, 16),)),
        "encoder_block": (EncoderBlock().eval(), (torch.randn(2, 8, 32), mask)),
    }


TRANSFORMERS = {"bert": bert, "vit": vit, "resnet": resnet, "gpt2": gpt2}
