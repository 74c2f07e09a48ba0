"""A small BERT-like encoder: embeddings, 2 post-LN transformer layers, a pooler.

Written out by hand (no `transformers` needed at run time): token + position
embeddings, multi-head self-attention with a padding mask, GELU feed-forward.
"""
import math

import torch
import torch.nn as nn

VOCAB, SEQ, D, HEADS, FF, LAYERS = 1000, 128, 256, 4, 1024, 2


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.attn_out = nn.Linear(D, D)
        self.ln1 = nn.LayerNorm(D, eps=1e-12)
        self.intermediate = nn.Linear(D, FF)
        self.output = nn.Linear(FF, D)
        self.ln2 = nn.LayerNorm(D, eps=1e-12)

    def forward(self, x, bias):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, HEADS, D // HEADS).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // HEADS) + bias, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, D)
        x = self.ln1(x + self.attn_out(y))
        return self.ln2(x + self.output(nn.functional.gelu(self.intermediate(x))))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.pos = nn.Embedding(SEQ, D)
        self.ln = nn.LayerNorm(D, eps=1e-12)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.pooler = nn.Linear(D, D)

    def forward(self, ids, mask):
        t = ids.shape[1]
        x = self.ln(self.tok(ids) + self.pos(torch.arange(t)))
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x, torch.tanh(self.pooler(x[:, 0]))


def get_model():
    torch.manual_seed(0)
    return Encoder().eval()


def example_inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=g)
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    mask[0, 100:] = 0
    return ids, mask
