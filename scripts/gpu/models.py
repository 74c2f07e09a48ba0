"""Whole models for the CUDA checks: built the same way on the build machine (to compile them) and on
the GPU machine (the eager torch reference), from code only — no weight files travel.

Every model is constructed from code (an ``examples/*.py`` model file, or a ``transformers`` config),
then ``init_weights`` overwrites every floating parameter and buffer from a seeded CPU
``torch.Generator`` (in sorted name order) and ``prune`` zeroes the smallest-magnitude 90 % of each
linear / conv weight. ``checksum`` of the result is stored at build time and compared on the GPU
machine, so a reference that differs from what was compiled is an error, not a silent mismatch
(torch / transformers versions differ between the two machines).

Only torch (and transformers for the ``hf_*`` / ``bert_base`` models) is needed here.
"""
from __future__ import annotations

import hashlib
import os
import runpy

import torch
import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPARSITY = 0.9
BERT_BASE_SEQ = 128


def _example(name: str):
    ns = runpy.run_path(os.path.join(REPO, "examples", f"{name}.py"), run_name="__sparsec_model__")
    model = ns["model"] if "model" in ns else ns["get_model"]()
    if "example_inputs" in ns and callable(ns["example_inputs"]):
        inputs = tuple(ns["example_inputs"]())
    else:
        inputs = tuple(ns["EXAMPLE_INPUTS"])
    return model.eval(), inputs


def _hf_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=64, attn_implementation="eager")
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(3))
    return _LastHidden(BertModel(cfg)).eval(), (ids,)


def _hf_gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=4, use_cache=False,
                     attn_implementation="eager")
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(4))
    return _LastHidden(GPT2Model(cfg)).eval(), (ids,)


class _LastHidden(nn.Module):
    """A transformers model returning only its last hidden state (one tensor out)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)[0]


class BertBaseEncoder(nn.Module):
    """BERT-base's 12-layer encoder (transformers ``BertModel`` config defaults: 768 hidden, 12 heads,
    3072 intermediate); input = the embedding output ``[B, T, 768]``, no padding mask. The embedding
    tables (30522 x 768: 47 MB in fp16, not a matmul) are left out so the artifact stays small."""

    def __init__(self, attn: str = "eager"):
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(attn_implementation=attn)
        self.encoder = BertModel(cfg).encoder

    def forward(self, x):
        return self.encoder(x)[0]


def bert_base_inputs(batch: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + batch)
    return (torch.randn(batch, BERT_BASE_SEQ, 768, generator=g).to(dtype),)


class DecodeMLP(nn.Module):
    """Two linears without an activation between them at 32 tokens (LLM decode with a small batch): under
    ``--arch sm_90a`` the planner gives their 90 %-sparse weights to the tiled design as ``mma="wg"``."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(1024, 2816), nn.Linear(2816, 1024)

    def forward(self, x):
        return self.down(self.up(x)) + x


def _decode_mlp():
    return DecodeMLP(), (torch.randn(1, 32, 1024, generator=torch.Generator().manual_seed(7)),)


def _decode_mlp16():
    """DecodeMLP at 16 tokens: the planner's 90 % variant below 32 tokens decodes into the 2:4 sparse operand."""
    return DecodeMLP(), (torch.randn(1, 16, 1024, generator=torch.Generator().manual_seed(8)),)


class DecodeMLP2k(DecodeMLP):
    """DecodeMLP with 2048 -> 4096 -> 2048 linears: large enough for the planner's tiled kernel at one token and
    70 %."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(2048, 4096), nn.Linear(4096, 2048)


def _decode_mlp1():
    """Batch-1 decode (one token): below 8 tokens the planner runs the mma.sync tiled kernel where it predicts it
    faster than dense (``select.predict_tiled_small_us``)."""
    return DecodeMLP2k(), (torch.randn(1, 1, 2048, generator=torch.Generator().manual_seed(9)),)


class DecodeGeluMLP(DecodeMLP):
    """DecodeMLP with a GELU after the up projection: the activation fuses into that layer's tiled kernel, whose
    K splits are then summed by the fixup (``fx=1``, session 13) instead of atomics."""

    def forward(self, x):
        return self.down(nn.functional.gelu(self.up(x))) + x


def _decode_gelu16():
    return DecodeGeluMLP(), (torch.randn(1, 16, 1024, generator=torch.Generator().manual_seed(10)),)


def _decode_dispatch():
    """DecodeMLP compiled for three token counts in one artifact (shape-aware dispatch, docs/dispatch.md): a
    prefill of 128 tokens, 16 decodes at once and a single decode, each variant with its own kernel per layer.
    The inputs are a list of example-input tuples, one per variant."""
    g = torch.Generator().manual_seed(11)
    return DecodeMLP(), [(torch.randn(1, t, 1024, generator=g),) for t in (128, 16, 1)]


MODELS = {
    "decode_dispatch": _decode_dispatch,
    "decode_gelu16": _decode_gelu16,
    "decode_mlp1": _decode_mlp1,
    "decode_mlp": _decode_mlp,
    "decode_mlp16": _decode_mlp16,
    "mlp": lambda: _example("mlp"),
    "cnn": lambda: _example("cnn"),
    "bert_encoder": lambda: _example("bert_encoder"),
    "decoder_mlp": lambda: _example("decoder_mlp"),
    "llm_mlp": lambda: _example("llm_mlp"),
    "hf_bert": _hf_bert,
    "hf_gpt2": _hf_gpt2,
}


def _seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Every floating parameter / buffer drawn from one seeded CPU generator, in sorted name order."""
    g = torch.Generator().manual_seed(seed)
    for name, t in sorted(model.state_dict(keep_vars=True).items()):
        if not t.is_floating_point():
            continue
        shape = tuple(t.shape)
        if name.endswith("running_var"):
            v = torch.rand(shape, generator=g) + 0.5
        elif name.endswith("running_mean") or name.endswith("bias"):
            v = 0.05 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            fan_in = shape[-1] if len(shape) == 2 else int(torch.tensor(shape[1:]).prod())
            if "Conv1D" in type(_owner(model, name)).__name__:      # GPT-2 stores W as [in, out]
                fan_in = shape[0]
            v = torch.randn(shape, generator=g) * (1.0 / fan_in ** 0.5)
        else:                                                      # norm scales
            v = 1.0 + 0.1 * torch.randn(shape, generator=g)
        t.data.copy_(v.to(t.dtype))
    return model


def _owner(model: nn.Module, name: str) -> nn.Module:
    mod = model
    for part in name.split(".")[:-1]:
        mod = getattr(mod, part)
    return mod


def prunable(model: nn.Module):
    """(name, module) of every weight ``prune`` sparsifies: linears, GPT-2 Conv1D, convs with groups 1."""
    for name, m in model.named_modules():
        kind = type(m).__name__
        if isinstance(m, nn.Linear) or kind == "Conv1D" or (isinstance(m, nn.Conv2d) and m.groups == 1):
            if m.weight.numel() >= 256:
                yield name, m


@torch.no_grad()
def prune(model: nn.Module, sparsity: float = SPARSITY) -> nn.Module:
    """Zero the smallest-magnitude ``sparsity`` of each prunable weight (exactly ``round(n*s)`` zeros)."""
    for _, m in prunable(model):
        w = m.weight.data
        k = int(round(w.numel() * sparsity))
        if k == 0:
            continue
        order = w.abs().flatten().float().argsort(stable=True)
        flat = w.flatten().clone()
        flat[order[:k]] = 0
        w.copy_(flat.view_as(w))
    return model


def checksum(model: nn.Module) -> list[float]:
    s, a, n = 0.0, 0.0, 0
    for _, t in sorted(model.state_dict().items()):
        if t.is_floating_point():
            s += float(t.double().sum())
            a += float(t.double().abs().sum())
            n += int((t == 0).sum())
    return [s, a, float(n)]


@torch.no_grad()
def prune_24(model: nn.Module) -> nn.Module:
    """2:4: keep the 2 largest-magnitude of every 4 consecutive input columns of each prunable ``nn.Linear``
    (ties: the lower column, stable)."""
    for _, m in prunable(model):
        if not isinstance(m, nn.Linear) or m.weight.shape[1] % 4:
            continue
        w = m.weight.data
        g = w.view(w.shape[0], -1, 4)
        order = g.abs().float().argsort(dim=-1, descending=True, stable=True)
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, order[..., :2], True)
        w.copy_((g * keep).view_as(w))
    return model


def build(name: str):
    """``(model, inputs)``: the model with its deterministic, pruned fp32 weights. ``name`` may carry a pruning
    pattern, ``base@2:4`` (2:4 per linear) or ``base@70`` (70 % unstructured); the default is 90 % unstructured.
    ``inputs`` is a tuple of tensors, or for a shape-aware dispatch model a list of such tuples (one per
    variant)."""
    base, _, pattern = name.partition("@")
    if base == "bert_base":
        model, inputs = BertBaseEncoder("eager").eval(), bert_base_inputs(1)
    else:
        model, inputs = MODELS[base]()
    init_weights(model, _seed(base))
    if pattern == "2:4":
        prune_24(model)
    else:
        prune(model, int(pattern) / 100 if pattern else SPARSITY)
    return model.eval(), inputs


def write_weights(model: nn.Module, artifact: str) -> int:
    """Recreate an artifact's ``weights/*.npy`` from the model's state dict (the artifact was shipped
    without them): every weight packed into its format from the manifest, saved as ``write_artifact``
    does. ``sparsec.load`` then checks each file against the manifest's sha256, so a packing that
    differs in one bit is an error, never a silent change. Returns the number of files written."""
    import json

    import numpy as np

    from sparsec.ir import formats as F

    man = json.load(open(os.path.join(artifact, "manifest.json")))
    dtypes = {v["const"]: v["dtype"] for v in man["plan"]["values"].values() if v["kind"] == "const"}
    params = {r["weight"]: (r["format"], r["params"]) for r in man["report"]}
    classes = {"dense": F.Dense, "csr": F.CSR, "bitmap": F.Bitmap, "nm": F.NM, "bsr": F.BSR,
               "groupquant": F.GroupQuant}
    state = model.state_dict()
    packed: dict[str, object] = {}
    os.makedirs(os.path.join(artifact, "weights"), exist_ok=True)
    n = 0
    for key, rel in man["weights"].items():
        name, _, buf = key.partition("/")
        if name not in state:
            raise KeyError(f"{artifact}: weight {name!r} is not in the model's state dict")
        if buf:
            if name not in packed:
                fmt, p = params[name]
                w = state[name].to(getattr(torch, man["dtype"]))
                packed[name] = classes[fmt].from_dense(w, **{k: tuple(v) if isinstance(v, list) else v
                                                            for k, v in p.items()})
            if buf.startswith("tiled."):      # the tiled kernel's private layout "tiled.<rt>.<sc>.<code>[.wg|.wgx|.wsp].<buffer>"
                from sparsec.backends.cuda.kernels import tiled_layout

                parts = buf.split(".")
                rt, sc, code, b = parts[1], parts[2], parts[3], parts[-1]
                mma = parts[4] if len(parts) == 6 else "sync"
                if (name, rt, sc, code, mma) not in packed:
                    packed[(name, rt, sc, code, mma)] = tiled_layout.build_for(
                        packed[name], {"rt": int(rt), "sc": int(sc), "code": code,
                                       "mma": "wg" if mma in ("wgx", "wsp") else mma, "xa": int(mma == "wgx"),
                                       "sp": int(mma == "wsp")})[0]
                t = packed[(name, rt, sc, code, mma)][b]
            elif buf.startswith("mma."):      # the 2:4 mma.sp / wgmma.sp operands "mma.<buffer>"
                from sparsec.backends.cuda.kernels import mma_layout

                if buf[4:] not in packed.get((name, "mma"), {}):     # sp_frag: built on first use
                    packed[(name, "mma")] = mma_layout.build(packed[name], frag=buf == "mma.sp_frag")
                t = packed[(name, "mma")][buf[4:]]
            else:
                t = getattr(packed[name], buf)
        else:
            t = state[name].to(getattr(torch, dtypes.get(key, man["dtype"])))
        t = t.detach().contiguous().cpu()
        arr = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        np.save(os.path.join(artifact, rel), arr, allow_pickle=False)
        n += 1
    return n
