"""``--model model.py``: the layer list of a user's model, for the SAT simulator.

The interface the simulator consumes is a list of ``workloads.Layer``:
``(name, kind = conv2d | linear, C_in, C_out, kh, kw, stride, pad, h, w)``,
per-sample input shapes (a linear layer's ``h`` is its tokens per sample),
plus the example batch size. Two routes produce it:

1. **IR route** (used when ``sparsec.frontends`` provides ``import_model``):
   the model file is captured with torch.export and lowered to an
   ``ir.Graph``; every ``linear`` / ``conv2d`` node with a constant weight
   becomes a layer, its shapes read from the node's input types.
2. **Hook route** (fallback when the frontend is missing, or cannot lower
   the model): the model file is loaded by the same convention (``model`` or
   ``get_model()``, ``example_inputs()`` or ``EXAMPLE_INPUTS``) and run once
   with forward hooks on every ``nn.Linear`` / ``nn.Conv2d``.

Both routes also collect the step's non-GEMM work in program order and hang
it on the layer before it (``Layer.post``; before the first layer: ``pre``):
ReLU, GELU, tanh, softmax / log-softmax, LayerNorm, BatchNorm, max / average
pooling, additions of two same-shape activations (residuals), and matmuls
whose operands are both activations (``MatMul``: attention scores/context).
The IR route reads them from the graph's nodes (and a ``linear`` node's fused
activation); the hook route records them with a ``TorchFunctionMode`` while
the model runs. Other element-wise ops (scaling, masking, dropout), and the
loss (a model file does not define one), are not counted.

Grouped or dilated convolutions and asymmetric stride/padding are outside
the SAT model and raise ``ModelError`` naming the layer.
"""
from __future__ import annotations

import math
import os
import runpy
import sys

from dataclasses import replace

from sparsec.ir.errors import ModelError, SparsecError
from sparsec.sim.sat.workloads import Layer, MatMul, Vec

_ACT = {"relu": "relu", "gelu": "gelu", "tanh": "tanh", "softmax": "softmax", "log_softmax": "softmax",
        "layer_norm": "ln", "batch_norm": "bn", "max_pool2d": "maxpool", "avg_pool2d": "avgpool",
        "adaptive_avg_pool2d": "avgpool"}


def _vec(name, kind, in_shape, out_shape, params=0, kernel=2):
    """A ``Vec`` over one sample of ``in_shape`` (batch first)."""
    per = math.prod(int(s) for s in in_shape[1:]) if len(in_shape) > 1 else 1
    out = math.prod(int(s) for s in out_shape[1:]) if len(out_shape) > 1 else 1
    if kind == "maxpool":
        kind = "maxpool3" if kernel >= 3 else "maxpool2"
    return Vec(name, kind, max(1, per), ratio=out / per if kind in ("maxpool3", "maxpool2", "avgpool") else 1.0,
               params=params)


def _matmul(name, a_shape, b_shape):
    """``MatMul`` of two activations ``[..., m, k] @ [..., k, n]``; leading dims but the batch are instances."""
    m, k, n = int(a_shape[-2]) if len(a_shape) > 1 else 1, int(a_shape[-1]), int(b_shape[-1])
    lead = [int(x) for x in a_shape[:-2]]
    return MatMul(name, m, k, n, math.prod(lead[1:]) if len(lead) > 1 else 1)


def _attach(layers: list[Layer], events: list) -> list[Layer]:
    """``events``: ("layer", i) markers and ops in program order -> layers with pre/post filled in."""
    pre, post, cur = [], {}, None
    for ev in events:
        if isinstance(ev, tuple):
            cur = ev[1]
        elif cur is None:
            pre.append(ev)
        else:
            post.setdefault(cur, []).append(ev)
    out = [replace(l, post=tuple(post.get(i, ()))) for i, l in enumerate(layers)]
    if out and pre:
        out[0] = replace(out[0], pre=tuple(pre))
    return out


def _pair(v, what: str, where: str) -> int:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(set(t)) != 1:
        raise ModelError(f"{where}: asymmetric {what} {t} is not supported by the SAT model")
    return int(t[0])


def _conv_layer(name, x_shape, w_shape, stride, padding, dilation, groups) -> Layer:
    where = f"layer {name}"
    if groups != 1:
        raise ModelError(f"{where}: grouped convolution (groups={groups}) is not supported by the SAT model")
    if _pair(dilation, "dilation", where) != 1:
        raise ModelError(f"{where}: dilated convolution is not supported by the SAT model")
    if len(x_shape) != 4:
        raise ModelError(f"{where}: conv2d input must be NCHW, got shape {tuple(x_shape)}")
    co, ci, kh, kw = (int(s) for s in w_shape)
    return Layer(name, "conv2d", ci, co, kh, kw, _pair(stride, "stride", where),
                 _pair(padding, "padding", where), int(x_shape[2]), int(x_shape[3]))


def _linear_layer(name, x_shape, w_shape, bias=False) -> Layer:
    tokens = math.prod(int(s) for s in x_shape[1:-1]) if len(x_shape) > 2 else 1
    co, ci = (int(s) for s in w_shape)
    return Layer(name, "linear", ci, co, h=max(1, tokens), bias=bias)


def layers_from_graph(graph) -> tuple[list[Layer], int]:
    """Layers of an ``ir.Graph`` (its linear/conv2d nodes) and the batch size of their inputs."""
    from sparsec.ir.ops import Op
    types = graph.types()
    consts = graph.constant_map()
    layers, batch, events = [], None, []
    for n in graph.nodes:
        if n.op not in (Op.LINEAR, Op.CONV2D) or len(n.inputs) < 2 or n.inputs[1] not in consts:
            ev = _ir_op(n, types, consts)
            if ev is not None:
                events.append(ev)
            continue
        events.append(("layer", len(layers)))
        xs, ws = types[n.inputs[0]].shape, types[n.inputs[1]].shape
        if n.op == Op.CONV2D:
            a = n.attr
            layers.append(replace(_conv_layer(n.name, xs, ws, a.get("stride", 1), a.get("padding", 0),
                                              a.get("dilation", 1), a.get("groups", 1)), bias=len(n.inputs) > 2))
        else:
            # a fused residual (passes.fuse) is the last input, not a bias
            nb = len(n.inputs) - (1 if n.attr.get("residual") else 0)
            layers.append(_linear_layer(n.name, xs, ws, bias=nb > 2))
            act = n.attr.get("activation", "none")
            if act in ("relu", "gelu"):
                ys = types[n.name].shape
                events.append(_vec(f"{n.name}.{act}", act, ys, ys))
        batch = batch or (int(xs[0]) if len(xs) > 1 else 1)
    return _attach(layers, events), batch or 1


def _ir_op(n, types, consts):
    """The non-GEMM op of an IR node, or None (not counted)."""
    from sparsec.ir.ops import Op
    ins = [i for i in n.inputs if i not in consts]
    if not ins:
        return None
    xs, ys = types[ins[0]].shape, types[n.name].shape
    name = n.op.value if hasattr(n.op, "value") else str(n.op)
    if name in _ACT:
        params = 0
        if n.op in (Op.LAYER_NORM, Op.BATCH_NORM):
            params = 2 * (int(xs[-1]) if n.op == Op.LAYER_NORM else int(xs[1]))
        k = n.attr.get("kernel_size", 2)
        k = k[0] if isinstance(k, (tuple, list)) else k
        return _vec(n.name, _ACT[name], xs, ys, params, int(k))
    if n.op == Op.ADD and len(ins) == 2 and tuple(types[ins[0]].shape) == tuple(types[ins[1]].shape):
        return _vec(n.name, "add", xs, ys)
    if n.op in (Op.MATMUL, Op.BMM) and len(ins) == 2 and len(n.inputs) == 2:
        return _matmul(n.name, xs, types[ins[1]].shape)
    return None


def _load_file(path: str):
    """The model-file convention, for the hook route."""
    sys.path.insert(0, os.path.dirname(path))
    try:
        ns = runpy.run_path(path, run_name="__sparsec_model__")
    except Exception as exc:
        raise ModelError(f"{path}: the model file raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(os.path.dirname(path))
    model = ns.get("model")
    if model is None and callable(ns.get("get_model")):
        model = ns["get_model"]()
    if model is None:
        raise ModelError(f"{path}: defines neither `model` (an nn.Module) nor `get_model()`")
    if callable(ns.get("example_inputs")):
        inputs = ns["example_inputs"]()
    elif "EXAMPLE_INPUTS" in ns:
        inputs = ns["EXAMPLE_INPUTS"]
    else:
        raise ModelError(f"{path}: defines neither `example_inputs()` nor `EXAMPLE_INPUTS`")
    import torch
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    return model, tuple(inputs)


def layers_from_hooks(model, inputs) -> tuple[list[Layer], int]:
    """Layers of an ``nn.Module`` found by running it once with forward hooks."""
    import torch
    from torch import nn
    seen, handles = [], []

    def hook(name):
        def fn(mod, args, out):
            seen.append((name, mod, tuple(args[0].shape)))
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            handles.append(mod.register_forward_hook(hook(name)))
    events = []
    params = {id(p) for p in model.parameters()}
    try:
        with torch.no_grad(), _Recorder(events, seen, params):
            model.eval()(*inputs)
    except Exception as exc:
        raise ModelError(f"running the model on its example inputs raised {type(exc).__name__}: {exc}") from None
    finally:
        for h in handles:
            h.remove()
    layers, batch, count = [], None, {}
    for name, mod, xs, *_ in seen:
        count[name] = count.get(name, 0) + 1
        lname = name if count[name] == 1 else f"{name}#{count[name]}"   # a module called twice
        if isinstance(mod, nn.Conv2d):
            if isinstance(mod.padding, str):
                raise ModelError(f"layer {lname}: string padding {mod.padding!r} is not supported; use integers")
            layers.append(replace(_conv_layer(lname, xs, mod.weight.shape, mod.stride, mod.padding,
                                              mod.dilation, mod.groups), bias=mod.bias is not None))
        else:
            layers.append(_linear_layer(lname, xs, mod.weight.shape, bias=mod.bias is not None))
        batch = batch or (xs[0] if len(xs) > 1 else 1)
    return _attach(layers, events), int(batch or 1)


def _recorder_base():
    from torch.overrides import TorchFunctionMode
    return TorchFunctionMode


class _Recorder(_recorder_base()):
    """Records non-GEMM torch calls (and a marker per conv/linear call) in program order."""

    def __init__(self, events, seen, params):
        super().__init__()
        self.events, self.seen, self.params, self.n = events, seen, params, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import torch
        import torch.nn.functional as F
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        t = [a for a in args if isinstance(a, torch.Tensor)]
        acts = [a for a in t if id(a) not in self.params]
        self.n += 1
        tag = f"{name.strip('_')}#{self.n}"
        if func in (F.linear, F.conv2d):
            self.events.append(("layer", sum(1 for e in self.events if isinstance(e, tuple))))
        elif name.strip("_") in _ACT and acts and isinstance(out, torch.Tensor):
            kind = name.strip("_")
            p = sum(int(a.numel()) for a in [*t, *kwargs.values()]
                    if isinstance(a, torch.Tensor) and id(a) in self.params)
            k = kwargs.get("kernel_size", args[1] if len(args) > 1 and kind == "max_pool2d" else 2)
            k = k[0] if isinstance(k, (tuple, list)) else k
            self.events.append(_vec(tag, _ACT[kind], acts[0].shape, out.shape, p, int(k)))
        elif (func in (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__iadd__)
              and len(acts) == 2 and acts[0].shape == acts[1].shape and acts[0].dim() > 1):
            self.events.append(_vec(tag, "add", acts[0].shape, out.shape))
        elif (func in (torch.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.__matmul__)
              and len(acts) == 2 and len(t) == 2):
            self.events.append(_matmul(tag, acts[0].shape, acts[1].shape))
        return out


def load_layers(path: str | os.PathLike) -> tuple[list[Layer], int, str]:
    """(layers, example batch, route) of the model file at ``path``; route is "ir" or "hooks"."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such model file")
    try:
        from sparsec.frontends.load import import_model
    except ImportError:
        import_model = None
    if import_model is not None:
        try:
            graph, _ = import_model(path)
            layers, batch = layers_from_graph(graph)
            route = "ir"
        except SparsecError as exc:
            if "supported by the SAT model" in str(exc):
                raise
            layers, batch = layers_from_hooks(*_load_file(path))
            route = f"hooks (IR frontend could not lower it: {str(exc)[:120]})"
    else:
        layers, batch = layers_from_hooks(*_load_file(path))
        route = "hooks"
    if not layers:
        raise ModelError(f"{path}: the model has no nn.Linear / nn.Conv2d layers to simulate")
    return layers, batch, route
