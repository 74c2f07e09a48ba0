"""Training workloads: conv/linear layers and their three GEMMs (FF, BP, WU).

Every layer ``Y = X · W`` becomes, for a batch of ``B``:

====  ==========================  =====================  ======================
phase GEMM  Out[M, N] = A[M,K]·B[K,N]  B operand (sparse?)    reduction groups
====  ==========================  =====================  ======================
FF    Y    = Xcol · W              W  [K, C_out]  N:M      along C_in per (kh, kw)
BP    dXcol= dY · Wᵀ               Wᵀ [C_out, K]  N:M      along C_out
WU    dW   = Xcolᵀ · dY            dY [Md, C_out] dense    --
====  ==========================  =====================  ======================

with ``Md = B·H_out·W_out`` (conv) or ``B·tokens`` (linear) and
``K = kh·kw·C_in`` ordered (kh, kw, C_in) (``sparsec.passes.bdwp``). A conv's
Xcol is never materialised in DRAM: an on-chip im2col/col2im address
generator expands X (and folds dXcol back into dX), so DRAM traffic of that
operand is its GEMM-view size divided by the expansion ``Md·K / |X|`` (at
least 1). The first layer's BP is skipped (no gradient w.r.t. the input image).
Built-in networks use ImageNet shapes (224×224, 1000 classes); BERT-base uses
sequence length 128. Only conv and linear layers run on the array (attention
score/context matmuls, norms, activations and pooling are not modelled).
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsec.ir.errors import ParameterError
from sparsec.passes.bdwp import NM, Groups, bp_groups, ff_groups


@dataclass(frozen=True)
class Layer:
    """A conv2d or linear layer of a training workload (input shape per sample)."""

    name: str
    kind: str            # "conv2d" | "linear"
    cin: int
    cout: int
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad: int = 0
    h: int = 1           # conv: input height; linear: tokens per sample
    w: int = 1           # conv: input width; linear: 1

    def __post_init__(self):
        if self.kind not in ("conv2d", "linear"):
            raise ParameterError(f"layer {self.name!r}: kind must be conv2d or linear, got {self.kind!r}")
        for f in ("cin", "cout", "kh", "kw", "stride", "h", "w"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ParameterError(f"layer {self.name!r}: {f} must be a positive integer, got {v!r}")
        if not isinstance(self.pad, int) or self.pad < 0:
            raise ParameterError(f"layer {self.name!r}: pad must be a non-negative integer, got {self.pad!r}")
        if self.kind == "conv2d" and (self.h + 2 * self.pad < self.kh or self.w + 2 * self.pad < self.kw):
            raise ParameterError(f"layer {self.name!r}: kernel {self.kh}x{self.kw} larger than the padded "
                                 f"input {self.h + 2 * self.pad}x{self.w + 2 * self.pad}")

    @property
    def weight_shape(self) -> tuple:
        if self.kind == "linear":
            return (self.cout, self.cin)
        return (self.cout, self.cin, self.kh, self.kw)

    def out_hw(self) -> tuple[int, int]:
        if self.kind == "linear":
            return self.h, 1
        return ((self.h + 2 * self.pad - self.kh) // self.stride + 1,
                (self.w + 2 * self.pad - self.kw) // self.stride + 1)

    @property
    def k(self) -> int:
        return self.cin * self.kh * self.kw

    def rows(self, batch: int) -> int:
        ho, wo = self.out_hw()
        return batch * ho * wo

    def expansion(self, batch: int) -> float:
        """im2col expansion |Xcol| / |X| (>= 1): how much larger the GEMM view is than X in DRAM."""
        x = batch * self.h * self.w * self.cin
        return max(1.0, self.rows(batch) * self.k / x)

    def macs(self, batch: int) -> int:
        """Dense MACs of one phase (FF, BP and WU are equal)."""
        return self.rows(batch) * self.k * self.cout


@dataclass(frozen=True)
class Gemm:
    """One phase of one layer as ``Out[m, n] = A[m, k] · B[k, n]``, B N:M-sparse along k unless dense."""

    layer: str
    phase: str           # FF | BP | WU
    m: int
    k: int
    n: int
    groups: Groups       # reduction groups of B (n = m = 1: dense)
    a_expand: float = 1.0
    out_expand: float = 1.0

    @property
    def sparse(self) -> bool:
        return self.groups.n < self.groups.m

    @property
    def kc(self) -> int:
        return self.groups.kept_len

    @property
    def macs(self) -> int:
        """MACs actually executed (kept weights only when sparse)."""
        return self.m * self.kc * self.n

    @property
    def dense_macs(self) -> int:
        return self.m * self.k * self.n


def dense_groups(k: int) -> Groups:
    return Groups(k, 1, 1, 1)


def layer_gemms(layer: Layer, batch: int, pattern: NM, first: bool = False) -> list[Gemm]:
    """FF, BP (unless ``first``) and WU of ``layer`` at ``batch`` under ``pattern`` (BDWP)."""
    md, k, co = layer.rows(batch), layer.k, layer.cout
    ex = layer.expansion(batch)
    if pattern.dense:
        gff, gbp = dense_groups(k), dense_groups(co)
    else:
        gff, gbp = ff_groups(layer.weight_shape, pattern), bp_groups(layer.weight_shape, pattern)
    out = [Gemm(layer.name, "FF", md, k, co, gff, a_expand=ex)]
    if not first:
        out.append(Gemm(layer.name, "BP", md, co, k, gbp, out_expand=ex))
    out.append(Gemm(layer.name, "WU", k, md, co, dense_groups(md), a_expand=ex))
    return out


# --- built-in networks -------------------------------------------------------------

def _conv(name, cin, cout, k, s, p, h):
    return Layer(name, "conv2d", cin, cout, k, k, s, p, h, h)


def resnet(depth: int) -> list[Layer]:
    """torchvision ResNet-18/50 (v1.5: stride on the 3×3 of a bottleneck) at 224×224."""
    if depth not in (18, 50):
        raise ParameterError(f"resnet depth must be 18 or 50, got {depth}")
    blocks = [2, 2, 2, 2] if depth == 18 else [3, 4, 6, 3]
    layers = [_conv("conv1", 3, 64, 7, 2, 3, 224)]
    h, cin = 56, 64
    for stage, (nb, width) in enumerate(zip(blocks, [64, 128, 256, 512]), start=1):
        for b in range(nb):
            s = 2 if (stage > 1 and b == 0) else 1
            pre = f"layer{stage}.{b}"
            if depth == 18:
                cout = width
                layers.append(_conv(f"{pre}.conv1", cin, width, 3, s, 1, h))
                layers.append(_conv(f"{pre}.conv2", width, width, 3, 1, 1, h // s))
            else:
                cout = width * 4
                layers.append(_conv(f"{pre}.conv1", cin, width, 1, 1, 0, h))
                layers.append(_conv(f"{pre}.conv2", width, width, 3, s, 1, h))
                layers.append(_conv(f"{pre}.conv3", width, cout, 1, 1, 0, h // s))
            if s != 1 or cin != cout:
                layers.append(_conv(f"{pre}.downsample", cin, cout, 1, s, 0, h))
            cin, h = cout, h // s
    layers.append(Layer("fc", "linear", cin, 1000))
    return layers


def vgg16() -> list[Layer]:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, cin, h, i = [], 3, 224, 0
    for v in cfg:
        if v == "M":
            h //= 2
            continue
        layers.append(_conv(f"features.{i}", cin, v, 3, 1, 1, h))
        cin, i = v, i + 1
    layers += [Layer("classifier.0", "linear", 512 * 7 * 7, 4096),
               Layer("classifier.3", "linear", 4096, 4096),
               Layer("classifier.6", "linear", 4096, 1000)]
    return layers


def _encoder(prefix: str, n: int, d: int, ff: int, tokens: int) -> list[Layer]:
    out = []
    for i in range(n):
        p = f"{prefix}.{i}"
        out += [Layer(f"{p}.attn.qkv", "linear", d, 3 * d, h=tokens),
                Layer(f"{p}.attn.proj", "linear", d, d, h=tokens),
                Layer(f"{p}.mlp.fc1", "linear", d, ff, h=tokens),
                Layer(f"{p}.mlp.fc2", "linear", ff, d, h=tokens)]
    return out


def vit_b16() -> list[Layer]:
    """ViT-B/16 at 224×224: 196 patches + class token, 12 layers of width 768."""
    return ([_conv("patch_embed", 3, 768, 16, 16, 0, 224)] + _encoder("blocks", 12, 768, 3072, 197)
            + [Layer("head", "linear", 768, 1000, h=1)])


def bert_base(seq: int = 128) -> list[Layer]:
    """BERT-base encoder (12 × 768, FFN 3072) at sequence length ``seq``, pooler and 2-way classifier."""
    return (_encoder("encoder", 12, 768, 3072, seq)
            + [Layer("pooler", "linear", 768, 768, h=1), Layer("classifier", "linear", 768, 2, h=1)])


WORKLOADS = {
    "resnet18": lambda: resnet(18),
    "resnet50": lambda: resnet(50),
    "vgg16": vgg16,
    "vit_b16": vit_b16,
    "bert_base": bert_base,
}


def builtin(name: str) -> list[Layer]:
    key = name.lower().replace("-", "_").replace("/", "")
    key = {"vit_b_16": "vit_b16", "vitb16": "vit_b16", "bert": "bert_base", "bertbase": "bert_base"}.get(key, key)
    if key not in WORKLOADS:
        raise ParameterError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    return WORKLOADS[key]()


def training_gemms(layers: list[Layer], batch: int, pattern: NM) -> list[list[Gemm]]:
    """Per layer, its phase GEMMs (first layer without BP)."""
    if not isinstance(batch, int) or batch < 1:
        raise ParameterError(f"batch must be a positive integer, got {batch!r}")
    if not layers:
        raise ParameterError("workload has no conv2d/linear layers")
    names = [l.name for l in layers]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ParameterError(f"workload layer names must be unique; repeated: {', '.join(dup)}")
    return [layer_gemms(l, batch, pattern, first=(i == 0)) for i, l in enumerate(layers)]
