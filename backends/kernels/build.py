"""Family registry, PrimFunc generation and building/caching of matmul kernels."""
from __future__ import annotations

import functools
import threading

import torch

from sparsec.backends.kernels.common import (
    KernelError, MatmulFamily, MatmulSpec, WeightMeta, check_meta, fuse_residual, matmul_args, meta_of,
    torch_dtype,
)
from sparsec.backends.kernels.bitmap import BitmapFamily
from sparsec.backends.kernels.bsr import BSRFamily
from sparsec.backends.kernels.csr import CSRFamily
from sparsec.backends.kernels.dense import DenseFamily
from sparsec.backends.kernels.groupquant import GroupQuantFamily
from sparsec.backends.kernels.nm import NMFamily
from sparsec.backends.kernels.parallelism import resolve_parallel
from sparsec.backends.kernels.schedules.llvm import llvm_plan

FAMILIES: dict[str, MatmulFamily] = {f.format: f for f in (
    DenseFamily(), CSRFamily(), BitmapFamily(), NMFamily(), BSRFamily(), GroupQuantFamily())}


def family_for(fmt_name: str) -> MatmulFamily:
    try:
        return FAMILIES[fmt_name]
    except KeyError:
        raise KernelError(f"no matmul kernel family for format {fmt_name!r}; "
                          f"families: {', '.join(FAMILIES)}") from None


def _target(target):
    import tvm

    from sparsec.backends.target import host_target

    if target is None:
        return host_target()
    if isinstance(target, (str, dict)):
        return tvm.target.Target(target)
    return target


def _plan(family, meta, spec, knobs, target):
    if str(target.kind.name) != "llvm":
        raise KernelError(f"{family.format} kernel: no schedule for target kind {target.kind.name!r} yet "
                          f"(only llvm)")
    return llvm_plan(family, meta, spec, family.check_knobs(knobs), target)


def matmul_primfunc(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                    target=None, knobs: dict | None = None, name: str | None = None, residual: bool = False):
    """TIR for ``YT[O, T] = act(W @ XT + bias) [+ RT]``: returns ``(PrimFunc, args, resolved knobs)``.

    ``weight`` is a format object (or its ``WeightMeta``); shapes are
    specialised to ``weight``'s matrix and ``tokens``; nnz-sized buffers are
    symbolic. ``args`` (a list of ``Arg``) is the argument order.
    """
    meta = meta_of(weight)
    family = family_for(meta.format)
    spec = MatmulSpec(int(tokens), meta.rows, meta.cols, bool(bias), activation, meta.dtype, bool(residual))
    check_meta(meta, spec, family.format)
    family.check(meta)
    target = _target(target)
    knobs = resolve_parallel(weight, spec.tokens, knobs, target)    # the size rule, from nnz when known
    plan = _plan(family, meta, spec, knobs, target)
    func = family.algorithm(meta, spec, plan)
    if spec.residual:
        func = fuse_residual(func, spec)
    name = name or f"sparsec_{meta.format}_matmul"
    func = func.with_attr("global_symbol", name)
    return func, matmul_args(meta, spec, family.buffer_shapes(meta)), dict(plan.knobs)


class CompiledKernel:
    """A built matmul kernel for one (weight meta, spec, knobs, target)."""

    def __init__(self, meta: WeightMeta, spec: MatmulSpec, knobs: dict, target, args, module, name):
        self.meta, self.spec, self.knobs, self.target = meta, spec, knobs, target
        self.args, self.module, self.name = args, module, name
        self.func = module[name]     # raw callable: (*buffers, XT, [bias], YT), tvm or torch tensors
        self._dtype = torch_dtype(spec.dtype)

    def __repr__(self):
        return (f"CompiledKernel({self.meta.format}, O={self.spec.out_features}, K={self.spec.in_features}, "
                f"T={self.spec.tokens}, knobs={self.knobs})")

    def _check(self, buffers, bias):
        nb = len(self.meta.buffers)
        if len(buffers) != nb:
            raise KernelError(f"{self.meta.format} kernel: expected {nb} weight buffers "
                              f"({', '.join(self.meta.buffers)}), got {len(buffers)}")
        if self.spec.bias and bias is None:
            raise KernelError(f"{self.meta.format} kernel was built with a bias; none given")
        if not self.spec.bias and bias is not None:
            raise KernelError(f"{self.meta.format} kernel was built without a bias; one was given")

    def run_t(self, xt: torch.Tensor, *buffers, bias: torch.Tensor | None = None,
              out: torch.Tensor | None = None, residual_t: torch.Tensor | None = None) -> torch.Tensor:
        """Feature-major call: ``xt[K, T]`` -> ``yt[O, T]`` (no transposes); ``residual_t[O, T]``."""
        self._check(buffers, bias)
        if self.spec.residual != (residual_t is not None):
            raise KernelError(f"{self.meta.format} kernel was built {'with' if self.spec.residual else 'without'} "
                              f"a residual; {'none' if residual_t is None else 'one'} given")
        spec = self.spec
        if tuple(xt.shape) != (spec.in_features, spec.tokens) or xt.dtype != self._dtype:
            raise KernelError(f"{self.meta.format} kernel: XT must be {self._dtype} of shape "
                              f"[{spec.in_features}, {spec.tokens}], got {xt.dtype} {tuple(xt.shape)}")
        if out is None:
            out = torch.empty(spec.out_features, spec.tokens, dtype=self._dtype)
        call = [compact(b) for b in buffers] + [compact(xt)]
        if bias is not None:
            call.append(compact(bias.to(self._dtype)))
        if residual_t is not None:
            if tuple(residual_t.shape) != (spec.out_features, spec.tokens):
                raise KernelError(f"{self.meta.format} kernel: RT must be [{spec.out_features}, {spec.tokens}], "
                                  f"got {tuple(residual_t.shape)}")
            call.append(compact(residual_t.to(self._dtype)))
        call.append(out)
        self.func(*call)
        return out

    def run(self, x: torch.Tensor, *buffers_and_bias, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x[T, K]`` -> ``y[T, O]`` (torch layout; transposes around the feature-major kernel).

        Weight buffers in the format's order; the bias may be the last positional argument.
        """
        buffers = list(buffers_and_bias)
        if bias is None and self.spec.bias and len(buffers) == len(self.meta.buffers) + 1:
            bias = buffers.pop()
        return self.run_t(x.t().contiguous(), *buffers, bias=bias).t().contiguous()

    def run_format(self, x: torch.Tensor, fmt, bias: torch.Tensor | None = None) -> torch.Tensor:
        if WeightMeta.of(fmt) != self.meta:
            raise KernelError(f"kernel built for {self.meta}, weight is {WeightMeta.of(fmt)}")
        return self.run(x, *(getattr(fmt, b) for b in fmt.buffers), bias=bias)


def compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` with row-major strides as TVM checks them (torch's ``contiguous`` lets
    size-0/1 dimensions keep any stride)."""
    want, acc = [], 1
    for size in reversed(t.shape):
        want.append(acc)
        acc *= max(int(size), 1)
    if tuple(reversed(want)) == tuple(t.stride()):
        return t
    return torch.empty(t.shape, dtype=t.dtype).copy_(t)


_lock = threading.Lock()


def build_matmul(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                 target=None, knobs: dict | None = None, residual: bool = False) -> CompiledKernel:
    """Build (or fetch from the in-process cache) the kernel for ``weight``'s meta and ``tokens``."""
    meta = meta_of(weight)
    target = _target(target)
    # the parallel default depends on the weight's stored entries, which the meta lacks: resolved here
    knobs = resolve_parallel(weight, tokens, knobs, target) if knobs is None or "parallel" not in knobs \
        or knobs["parallel"] is None else knobs
    key = (meta, int(tokens), bool(bias), activation, str(target), tuple(sorted((knobs or {}).items())))
    if residual:       # (the key without it is unchanged, for callers that index the cache)
        key = key + (True,)
    with _lock:
        return _build_cached(key, target)


@functools.lru_cache(maxsize=512)
def _build_cached(key, target) -> CompiledKernel:
    import tvm

    meta, tokens, bias, activation, _, knobs = key[:6]
    residual = len(key) > 6 and key[6]
    func, args, resolved = matmul_primfunc(meta, tokens, bias=bias, activation=activation, target=target,
                                           knobs=dict(knobs), residual=residual)
    name = str(func.attrs["global_symbol"])
    module = tvm.tirx.build(tvm.IRModule({name: func}), target=target)
    spec = MatmulSpec(tokens, meta.rows, meta.cols, bias, activation, meta.dtype, residual)
    return CompiledKernel(meta, spec, resolved, target, args, module, name)
