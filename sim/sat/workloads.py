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
sequence length 128.

**Non-GEMM work of a training step.** A layer's ``post`` lists what the
network does to its output before the next layer (per sample, forward order):

- ``Vec(name, kind, elems, ratio, params)``: an element-wise, normalisation,
  pooling or loss op over ``elems`` elements per sample (``ratio`` = output /
  input elements for pooling; ``params`` = its trainable parameters, e.g. a
  norm's γ/β). Its forward and backward passes (bytes and operations per
  element) are ``vector.KINDS[kind]``; they run on the vector unit.
- ``MatMul(name, m, k, n, count)``: an activation × activation GEMM such as
  attention's score and context matmuls (nothing to prune: dense in both
  modes); forward ``C = A·B``, backward ``dA = dC·Bᵀ`` (BP) and ``dB = Aᵀ·dC``
  (WU), on the array like any GEMM (``matmul_gemms``).

Backward runs the ``post`` ops' backward in reverse before the layer's own
BP/WU; each layer's weight update (``Layer.params`` on the optimiser) follows
its WU. ``sim.sat.pipeline`` expands all of it; ``[step] gemm_only`` drops it.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsec.ir.errors import ParameterError
from sparsec.passes.bdwp import NM, Groups, bp_groups, ff_groups


@dataclass(frozen=True)
class Vec:
    """A vector-unit op on a layer's output: ``elems`` elements per sample of ``vector.KINDS[kind]``."""

    name: str
    kind: str
    elems: int
    ratio: float = 1.0   # output / input elements (pooling)
    params: int = 0      # trainable parameters it owns (norm γ/β, embeddings), updated by the optimiser

    def __post_init__(self):
        from sparsec.sim.sat.vector import KINDS
        if self.kind not in KINDS:
            raise ParameterError(f"op {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.elems, int) or self.elems < 1:
            raise ParameterError(f"op {self.name!r}: elems must be a positive integer, got {self.elems!r}")


@dataclass(frozen=True)
class MatMul:
    """An activation × activation GEMM ``C[m, n] = A[m, k] · B[k, n]``, ``count`` instances per sample.

    Neither operand is a weight, so nothing is pruned: dense in dense and in BDWP training.
    Multi-head attention's score ``S = Q·Kᵀ`` (T, dh, T) and context ``P·V`` (T, T, dh) are two of
    these with ``count`` = heads (``attention``).
    """

    name: str
    m: int
    k: int
    n: int
    count: int = 1


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
    bias: bool = False   # a bias vector (added in the array's write-back; updated by the optimiser)
    post: tuple = ()     # Vec / MatMul ops applied to the output before the next layer
    pre: tuple = ()      # Vec ops before the layer (only a network's input side: embeddings)

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

    @property
    def params(self) -> int:
        """Trainable parameters the optimiser updates for this layer: weight, bias, its post ops' own."""
        return (self.k * self.cout + (self.cout if self.bias else 0)
                + sum(p.params for p in self.post + self.pre if isinstance(p, Vec)))

    @property
    def pruned_params(self) -> int:
        """Parameters under an N:M mask (the weight)."""
        return self.k * self.cout


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
    count: int = 1       # independent instances run back to back (attention: batch × heads)
    activation: bool = False  # an activation × activation MatMul (no weight operand)

    @property
    def sparse(self) -> bool:
        return self.groups.n < self.groups.m

    @property
    def kc(self) -> int:
        return self.groups.kept_len

    @property
    def macs(self) -> int:
        """MACs actually executed (kept weights only when sparse), all instances."""
        return self.count * self.m * self.kc * self.n

    @property
    def dense_macs(self) -> int:
        return self.count * self.m * self.k * self.n


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


def matmul_gemms(mm: MatMul, batch: int) -> tuple[Gemm, Gemm, Gemm]:
    """FF ``C = A·B`` (m, k, n), BP ``dA = dC·Bᵀ`` (m, n, k), WU ``dB = Aᵀ·dC`` (k, m, n); dense."""
    c = batch * mm.count
    g = lambda ph, m, k, n: Gemm(mm.name, ph, m, k, n, dense_groups(k), count=c, activation=True)
    return g("FF", mm.m, mm.k, mm.n), g("BP", mm.m, mm.n, mm.k), g("WU", mm.k, mm.m, mm.n)


# --- built-in networks -------------------------------------------------------------

def _conv(name, cin, cout, k, s, p, h, post=(), bias=False):
    return Layer(name, "conv2d", cin, cout, k, k, s, p, h, h, bias=bias, post=tuple(post))


def _bn(name, c, hw, relu=True, add=False):
    """BatchNorm (+ residual add) (+ ReLU) on a ``c × hw × hw`` output."""
    e = c * hw * hw
    ops = [Vec(f"{name}.bn", "bn", e, params=2 * c)]
    if add:
        ops.append(Vec(f"{name}.add", "add", e))
    if relu:
        ops.append(Vec(f"{name}.relu", "relu", e))
    return ops


def resnet(depth: int) -> list[Layer]:
    """torchvision ResNet-18/50 (v1.5: stride on the 3×3 of a bottleneck) at 224×224.

    Non-GEMM work: BN after every conv, ReLU, the stem's 3×3/2 max pool, the residual add (after
    the block's last conv: the downsample's BN when there is one), global average pool, the loss.
    """
    if depth not in (18, 50):
        raise ParameterError(f"resnet depth must be 18 or 50, got {depth}")
    blocks = [2, 2, 2, 2] if depth == 18 else [3, 4, 6, 3]
    layers = [_conv("conv1", 3, 64, 7, 2, 3, 224,
                    _bn("conv1", 64, 112) + [Vec("maxpool", "maxpool3", 64 * 112 * 112, 0.25)])]
    h, cin = 56, 64
    for stage, (nb, width) in enumerate(zip(blocks, [64, 128, 256, 512]), start=1):
        for b in range(nb):
            s = 2 if (stage > 1 and b == 0) else 1
            pre = f"layer{stage}.{b}"
            cout = width if depth == 18 else width * 4
            down = s != 1 or cin != cout
            ho = h // s
            if depth == 18:
                block = [(f"{pre}.conv1", cin, width, 3, s, 1, h), (f"{pre}.conv2", width, width, 3, 1, 1, ho)]
            else:
                block = [(f"{pre}.conv1", cin, width, 1, 1, 0, h), (f"{pre}.conv2", width, width, 3, s, 1, h),
                         (f"{pre}.conv3", width, cout, 1, 1, 0, ho)]
            if down:
                block.append((f"{pre}.downsample", cin, cout, 1, s, 0, h))
            main_last = len(block) - 2 if down else len(block) - 1
            for i, (name, ci, co, k, st, pd, hh) in enumerate(block):
                out_hw = (hh + 2 * pd - k) // st + 1
                if i == len(block) - 1:        # the block's last conv: BN, residual add, ReLU
                    post = _bn(name, co, out_hw, relu=True, add=True)
                else:                           # the main branch's last BN feeds the add, no ReLU
                    post = _bn(name, co, out_hw, relu=i != main_last)
                layers.append(_conv(name, ci, co, k, st, pd, hh, post))
            cin, h = cout, ho
    last = layers[-1]
    layers[-1] = Layer(**{**last.__dict__, "post": last.post + (Vec("avgpool", "avgpool", cin * h * h, 1 / (h * h)),)})
    layers.append(Layer("fc", "linear", cin, 1000, bias=True, post=(Vec("loss", "loss", 1000),)))
    return layers


def vgg16() -> list[Layer]:
    """VGG-16 (no BN): ReLU after every conv/linear but the last, 2×2/2 max pools, the loss.

    Dropout (classifier) is not modelled.
    """
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, cin, h, i = [], 3, 224, 0
    for j, v in enumerate(cfg):
        if v == "M":
            continue
        e = v * h * h
        post = [Vec(f"features.{i}.relu", "relu", e)]
        if j + 1 < len(cfg) and cfg[j + 1] == "M":
            post.append(Vec(f"features.{i}.pool", "maxpool2", e, 0.25))
        layers.append(_conv(f"features.{i}", cin, v, 3, 1, 1, h, post, bias=True))
        cin, i = v, i + 1
        if post[-1].kind == "maxpool2":
            h //= 2
    layers += [Layer("classifier.0", "linear", 512 * 7 * 7, 4096, bias=True,
                     post=(Vec("classifier.0.relu", "relu", 4096),)),
               Layer("classifier.3", "linear", 4096, 4096, bias=True, post=(Vec("classifier.3.relu", "relu", 4096),)),
               Layer("classifier.6", "linear", 4096, 1000, bias=True, post=(Vec("loss", "loss", 1000),))]
    return layers


def attention(name: str, heads: int, tokens: int, dh: int) -> tuple:
    """Score matmul, softmax, context matmul of multi-head attention (after the qkv projection)."""
    return (MatMul(f"{name}.qk", tokens, dh, tokens, heads),
            Vec(f"{name}.softmax", "softmax", heads * tokens * tokens),
            MatMul(f"{name}.pv", tokens, tokens, dh, heads))


def _ln(name, d, tokens):
    return Vec(name, "ln", d * tokens, params=2 * d)


def _encoder(prefix: str, n: int, d: int, ff: int, tokens: int, heads: int, pre_norm: bool) -> list[Layer]:
    """Transformer encoder layers. Pre-norm (ViT): LN1 → qkv … proj → +x → LN2 → fc1 … fc2 → +x, the
    LN1 of a block sitting after the previous block's add; post-norm (BERT): … proj → +x → LN … fc2
    → +x → LN."""
    e, out = d * tokens, []
    for i in range(n):
        p = f"{prefix}.{i}"
        res1 = [Vec(f"{p}.attn.add", "add", e)]
        res2 = [Vec(f"{p}.mlp.add", "add", e)]
        if pre_norm:
            res1.append(_ln(f"{p}.norm2", d, tokens))
            nxt = f"{prefix}.{i + 1}.norm1" if i + 1 < n else f"{prefix}.norm"
            res2.append(_ln(nxt, d, tokens))
        else:
            res1.append(_ln(f"{p}.attn.norm", d, tokens))
            res2.append(_ln(f"{p}.mlp.norm", d, tokens))
        out += [Layer(f"{p}.attn.qkv", "linear", d, 3 * d, h=tokens, bias=True,
                      post=attention(f"{p}.attn", heads, tokens, d // heads)),
                Layer(f"{p}.attn.proj", "linear", d, d, h=tokens, bias=True, post=tuple(res1)),
                Layer(f"{p}.mlp.fc1", "linear", d, ff, h=tokens, bias=True,
                      post=(Vec(f"{p}.mlp.gelu", "gelu", ff * tokens),)),
                Layer(f"{p}.mlp.fc2", "linear", ff, d, h=tokens, bias=True, post=tuple(res2))]
    return out


def vit_b16() -> list[Layer]:
    """ViT-B/16 at 224×224: 196 patches + class token, 12 pre-norm layers of width 768, 12 heads.

    Non-GEMM work: class token + position embedding add, LayerNorms, attention score/context
    matmuls and softmax, GELU, residual adds, the loss. Dropout / drop-path are not modelled.
    """
    t, d = 197, 768
    stem = _conv("patch_embed", 3, d, 16, 16, 0, 224, bias=True,
                 post=(Vec("pos_embed.add", "add", t * d, params=t * d + d), _ln("blocks.0.norm1", d, t)))
    return ([stem] + _encoder("blocks", 12, d, 3072, t, 12, pre_norm=True)
            + [Layer("head", "linear", d, 1000, h=1, bias=True, post=(Vec("loss", "loss", 1000),))])


def bert_base(seq: int = 128) -> list[Layer]:
    """BERT-base encoder (12 × 768, 12 heads, FFN 3072) at sequence length ``seq``, pooler and 2-way classifier.

    Non-GEMM work: embedding gather + sum + LayerNorm (and the embedding tables' update), attention
    score/context matmuls and softmax, GELU, residual adds and LayerNorms, tanh pooler, the loss.
    Dropout is not modelled.
    """
    d = 768
    layers = _encoder("encoder", 12, d, 3072, seq, 12, pre_norm=False)
    emb = (Vec("embeddings", "embed", seq * d, params=(30522 + 512 + 2) * d), _ln("embeddings.norm", d, seq))
    layers[0] = Layer(**{**layers[0].__dict__, "pre": emb})
    return layers + [Layer("pooler", "linear", d, d, h=1, bias=True, post=(Vec("pooler.tanh", "tanh", d),)),
                     Layer("classifier", "linear", d, 2, h=1, bias=True, post=(Vec("loss", "loss", 2),))]


# Each built-in's usual optimiser (torchvision / DeiT / BERT recipes).
OPTIMISER = {"resnet18": "sgd", "resnet50": "sgd", "vgg16": "sgd", "vit_b16": "adamw", "bert_base": "adamw"}


WORKLOADS = {
    "resnet18": lambda: resnet(18),
    "resnet50": lambda: resnet(50),
    "vgg16": vgg16,
    "vit_b16": vit_b16,
    "bert_base": bert_base,
}


def canonical(name: str) -> str:
    key = name.lower().replace("-", "_").replace("/", "")
    key = {"vit_b_16": "vit_b16", "vitb16": "vit_b16", "bert": "bert_base", "bertbase": "bert_base"}.get(key, key)
    if key not in WORKLOADS:
        raise ParameterError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    return key


def builtin(name: str) -> list[Layer]:
    return WORKLOADS[canonical(name)]()


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
