"""BDWP training in PyTorch: N:M-sparse weights in both the forward and the backward pass.

``bdwp_wrap(model, "2:8")`` swaps every ``nn.Linear`` / ``nn.Conv2d`` for a
BDWP layer whose autograd function does what SAT does:

- **FF**: ``y = x · (W ⊙ mask_ff)`` with mask_ff N:M along C_in;
- **BP**: ``dx = dy · (W ⊙ mask_bp)ᵀ`` with mask_bp N:M along C_out (a second
  mask, on Wᵀ) — so the input gradient is *not* the exact gradient of FF;
- **WU**: ``dW = xᵀ · dy`` dense, applied to the dense master weight; with
  ``srste=λ > 0`` the SR-STE refinement ``dW += λ · (1 - mask_ff) ⊙ W``
  pulls pruned weights toward zero so masks settle.

Masks come from ``sparsec.passes.bdwp`` (the functions the simulator uses)
and are recomputed from the master weight at every training forward (or
every ``mask_interval`` steps); in eval mode the last masks are kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsec.ir.errors import ParameterError
from sparsec.passes import bdwp


class _BDWPLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, ff, bp, srste):
        ctx.save_for_backward(x, w, ff, bp)
        ctx.srste, ctx.has_bias = srste, b is not None
        return F.linear(x, w * ff, b)

    @staticmethod
    def backward(ctx, gy):
        x, w, ff, bp = ctx.saved_tensors
        dx = gy @ (w * bp)                                          # BP: second mask
        dw = gy.reshape(-1, gy.shape[-1]).T @ x.reshape(-1, x.shape[-1])   # WU: dense
        if ctx.srste:
            dw = dw + ctx.srste * (~ff) * w
        db = gy.reshape(-1, gy.shape[-1]).sum(0) if ctx.has_bias else None
        return dx, dw, db, None, None, None


class _BDWPConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, ff, bp, srste, stride, padding):
        ctx.save_for_backward(x, w, ff, bp)
        ctx.srste, ctx.has_bias, ctx.stride, ctx.padding = srste, b is not None, stride, padding
        return F.conv2d(x, w * ff, b, stride, padding)

    @staticmethod
    def backward(ctx, gy):
        x, w, ff, bp = ctx.saved_tensors
        dx = torch.nn.grad.conv2d_input(x.shape, w * bp, gy, ctx.stride, ctx.padding)
        dw = torch.nn.grad.conv2d_weight(x, w.shape, gy, ctx.stride, ctx.padding)
        if ctx.srste:
            dw = dw + ctx.srste * (~ff) * w
        db = gy.sum((0, 2, 3)) if ctx.has_bias else None
        return dx, dw, db, None, None, None, None, None


class _BDWPMixin:
    def _setup(self, pattern, srste: float, mask_interval: int):
        self.pattern = bdwp.parse_nm(pattern)
        if srste < 0:
            raise ParameterError(f"srste must be >= 0, got {srste}")
        if mask_interval < 1:
            raise ParameterError(f"mask_interval must be >= 1, got {mask_interval}")
        self.srste, self.mask_interval, self._step = float(srste), int(mask_interval), 0
        self.register_buffer("mask_ff", torch.ones_like(self.weight, dtype=torch.bool), persistent=False)
        self.register_buffer("mask_bp", torch.ones_like(self.weight, dtype=torch.bool), persistent=False)
        self.refresh_masks()

    @torch.no_grad()
    def refresh_masks(self):
        """Recompute both BDWP masks from the dense master weight."""
        ff, bp = bdwp.masks(self.weight.detach().cpu(), self.pattern)
        self.mask_ff.copy_(ff)
        self.mask_bp.copy_(bp)

    def _maybe_refresh(self):
        if self.training and not self.pattern.dense:
            if self._step % self.mask_interval == 0:
                self.refresh_masks()
            self._step += 1


class BDWPLinear(_BDWPMixin, nn.Linear):
    def __init__(self, in_features, out_features, bias=True, pattern="2:8", srste=0.0, mask_interval=1):
        super().__init__(in_features, out_features, bias)
        self._setup(pattern, srste, mask_interval)

    def forward(self, x):
        self._maybe_refresh()
        return _BDWPLinearFn.apply(x, self.weight, self.bias, self.mask_ff, self.mask_bp, self.srste)


class BDWPConv2d(_BDWPMixin, nn.Conv2d):
    def __init__(self, *args, pattern="2:8", srste=0.0, mask_interval=1, **kw):
        super().__init__(*args, **kw)
        if self.groups != 1 or self.dilation != (1, 1) or isinstance(self.padding, str) \
                or self.padding_mode != "zeros":
            raise ParameterError("BDWPConv2d supports groups=1, dilation=1, integer zero padding only")
        self._setup(pattern, srste, mask_interval)

    def forward(self, x):
        self._maybe_refresh()
        return _BDWPConvFn.apply(x, self.weight, self.bias, self.mask_ff, self.mask_bp, self.srste,
                                 self.stride, self.padding)


def _convert(mod: nn.Module, pattern, srste, mask_interval) -> nn.Module:
    if isinstance(mod, nn.Linear):
        new = BDWPLinear(mod.in_features, mod.out_features, mod.bias is not None, pattern, srste, mask_interval)
    else:
        new = BDWPConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                         mod.dilation, mod.groups, mod.bias is not None, mod.padding_mode,
                         pattern=pattern, srste=srste, mask_interval=mask_interval)
    with torch.no_grad():
        new.weight.copy_(mod.weight)
        if mod.bias is not None:
            new.bias.copy_(mod.bias)
    new.to(mod.weight.device, mod.weight.dtype)
    new.refresh_masks()
    return new


def bdwp_wrap(model: nn.Module, pattern="2:8", srste: float = 0.0, mask_interval: int = 1,
              skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every nn.Linear / nn.Conv2d of ``model`` (in place, except names in ``skip``) by BDWP layers."""
    bdwp.parse_nm(pattern)
    for name, child in list(model.named_children()):
        if name in skip:
            continue
        if type(child) in (nn.Linear, nn.Conv2d):
            setattr(model, name, _convert(child, pattern, srste, mask_interval))
        else:
            bdwp_wrap(child, pattern, srste, mask_interval,
                      tuple(s[len(name) + 1:] for s in skip if s.startswith(name + ".")))
    return model


def layer_masks(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module name: (mask_ff, mask_bp)}`` of every BDWP layer (what the simulator consumes)."""
    return {n: (m.mask_ff.clone(), m.mask_bp.clone()) for n, m in model.named_modules()
            if isinstance(m, _BDWPMixin)}
