"""conv2d with a sparse weight through im2col + the matmul families.

The weight ``[O, C, kh, kw]`` is stored in a format over its ``[O, C*kh*kw]``
view (the formats' own matrix view), so the matmul families apply unchanged.
``im2col`` writes ``cols[C*kh*kw, N*Ho*Wo]``, which is already the
feature-major ``XT[K, T]`` the families read (tokens = output pixels), and the
kernel's ``YT[O, N*Ho*Wo]`` is NCHW after a batch/channel swap (none at N = 1).
A 1x1, stride-1, unpadded convolution needs no im2col at all: ``x[C, H*W]`` is
``XT`` per image.

Why im2col rather than an implicit GEMM: the sparse kernels' inner loop is
"one weight, one contiguous activation row"; im2col makes that row
contiguous and costs one pass over ``K x T`` elements, against
``nnz x T`` multiply-adds in the matmul (``kh*kw*density`` more work; at 90%
sparsity with 3x3 kernels the copy is ~1/1 of the FMAs' memory traffic but
far fewer instructions). Measured split: see docs/kernels_cpu.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsec.backends.kernels.common import KernelError, meta_of, torch_dtype


@dataclass(frozen=True)
class ConvSpec:
    batch: int
    in_channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    dtype: str = "float32"

    @property
    def out_hw(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        ho = (self.height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (self.width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return ho, wo

    @property
    def tokens(self) -> int:
        ho, wo = self.out_hw
        return self.batch * ho * wo

    @property
    def is_pointwise(self) -> bool:
        """1x1, stride 1, no padding, one image: x[C, H*W] is already XT."""
        return (self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
                and self.batch == 1)


def _pair(v, name):
    if isinstance(v, int):
        v = (v, v)
    try:
        a, b = (int(x) for x in v)
    except (TypeError, ValueError):
        raise KernelError(f"conv2d: {name} must be an int or a pair of ints, got {v!r}") from None
    return a, b


def im2col_primfunc(spec: ConvSpec, name: str = "sparsec_im2col", parallel: bool | None = None):
    """TIR: ``X[N, C, H, W] -> cols[C*kh*kw, N*Ho*Wo]`` (zero padding), rows in parallel when
    ``parallel`` (default: ``parallelism.im2col_parallel``, the matmuls' size rule)."""
    import tvm
    from tvm import s_tir, te, tirx

    N, C, H, W = spec.batch, spec.in_channels, spec.height, spec.width
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel, spec.stride, spec.padding, spec.dilation
    ho, wo = spec.out_hw
    K, T = C * kh * kw, spec.tokens
    X = te.placeholder((N, C, H, W), spec.dtype, name="X")

    def col(k, t):
        c, i, j = k // (kh * kw), (k // kw) % kh, k % kw
        n, oh, ow = t // (ho * wo), (t // wo) % ho, t % wo
        h, w = oh * sh - ph + i * dh, ow * sw - pw + j * dw
        inside = tirx.all(h >= 0, h < H, w >= 0, w < W)
        return tirx.if_then_else(inside, X[n, c, tirx.min(tirx.max(h, 0), H - 1), tirx.min(tirx.max(w, 0), W - 1)],
                                 tirx.const(0, spec.dtype))

    cols = te.compute((K, T), col, name="cols")
    func = te.create_prim_func([X, cols]).with_attr("global_symbol", name)
    sch = s_tir.Schedule(tvm.IRModule({name: func}))
    k, t = sch.get_loops(sch.get_sblock("cols", func_name=name))
    if parallel is None:
        from sparsec.backends.kernels.parallelism import im2col_parallel
        parallel = im2col_parallel(K * T)
    if parallel:
        sch.parallel(k)
    return sch.mod[name].with_attr("global_symbol", name)


class CompiledConv:
    """im2col (skipped for pointwise convs) + a compiled matmul kernel."""

    def __init__(self, spec: ConvSpec, out_channels: int, matmul, im2col):
        self.spec, self.out_channels, self.matmul, self.im2col = spec, out_channels, matmul, im2col

    def columns(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        if tuple(x.shape) != (s.batch, s.in_channels, s.height, s.width):
            raise KernelError(f"conv2d: input must be [{s.batch}, {s.in_channels}, {s.height}, {s.width}], "
                              f"got {list(x.shape)}")
        x = x.to(torch_dtype(s.dtype)).contiguous()
        if self.im2col is None:
            return x.reshape(s.in_channels, s.height * s.width)
        kh, kw = s.kernel
        cols = torch.empty(s.in_channels * kh * kw, s.tokens, dtype=x.dtype)
        self.im2col(x, cols)
        return cols

    def run(self, x: torch.Tensor, *buffers, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x[N, C, H, W]`` -> ``y[N, O, Ho, Wo]``."""
        s = self.spec
        ho, wo = s.out_hw
        yt = self.matmul.run_t(self.columns(x), *buffers, bias=bias)
        return yt.reshape(self.out_channels, s.batch, ho, wo).transpose(0, 1).contiguous()

    def run_format(self, x, fmt, bias=None):
        return self.run(x, *(getattr(fmt, b) for b in fmt.buffers), bias=bias)


def build_conv2d(weight, input_shape, *, kernel, stride=1, padding=0, dilation=1, groups: int = 1,
                 bias: bool = False, activation: str | None = None, target=None,
                 knobs: dict | None = None) -> CompiledConv:
    """Sparse-weight conv2d for ``input_shape = (N, C, H, W)``; ``weight`` stores ``[O, C*kh*kw]``."""
    import tvm

    from sparsec.backends.kernels.build import _target, build_matmul

    if groups != 1:
        raise KernelError(f"conv2d: only groups=1 is supported, got groups={groups}")
    meta = meta_of(weight)
    try:
        n, c, h, w = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise KernelError(f"conv2d: input_shape must be (N, C, H, W), got {input_shape!r}") from None
    spec = ConvSpec(n, c, h, w, _pair(kernel, "kernel"), _pair(stride, "stride"), _pair(padding, "padding"),
                    _pair(dilation, "dilation"), meta.dtype)
    kh, kw = spec.kernel
    if meta.cols != c * kh * kw:
        raise KernelError(f"conv2d: weight matrix has K = {meta.cols} columns, C*kh*kw = {c * kh * kw}")
    ho, wo = spec.out_hw
    if ho < 1 or wo < 1:
        raise KernelError(f"conv2d: empty output {ho}x{wo} for input {h}x{w} and kernel {kh}x{kw}")
    target = _target(target)
    mm = build_matmul(meta, spec.tokens, bias=bias, activation=activation, target=target, knobs=knobs)
    im2col = None
    if not spec.is_pointwise:
        fn = im2col_primfunc(spec)
        im2col = tvm.tirx.build(tvm.IRModule({"sparsec_im2col": fn}), target=target)["sparsec_im2col"]
    return CompiledConv(spec, meta.rows, mm, im2col)
