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

Grouped or dilated convolutions and asymmetric stride/padding are outside
the SAT model and raise ``ModelError`` naming the layer.
"""
from __future__ import annotations

import math
import os
import runpy
import sys

from sparsec.ir.errors import ModelError, SparsecError
from sparsec.sim.sat.workloads import Layer


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


def _linear_layer(name, x_shape, w_shape) -> Layer:
    tokens = math.prod(int(s) for s in x_shape[1:-1]) if len(x_shape) > 2 else 1
    co, ci = (int(s) for s in w_shape)
    return Layer(name, "linear", ci, co, h=max(1, tokens))


def layers_from_graph(graph) -> tuple[list[Layer], int]:
    """Layers of an ``ir.Graph`` (its linear/conv2d nodes) and the batch size of their inputs."""
    from sparsec.ir.ops import Op
    types = graph.types()
    consts = graph.constant_map()
    layers, batch = [], None
    for n in graph.nodes:
        if n.op not in (Op.LINEAR, Op.CONV2D) or len(n.inputs) < 2 or n.inputs[1] not in consts:
            continue
        xs, ws = types[n.inputs[0]].shape, types[n.inputs[1]].shape
        if n.op == Op.CONV2D:
            a = n.attr
            layers.append(_conv_layer(n.name, xs, ws, a.get("stride", 1), a.get("padding", 0),
                                      a.get("dilation", 1), a.get("groups", 1)))
        else:
            layers.append(_linear_layer(n.name, xs, ws))
        batch = batch or (int(xs[0]) if len(xs) > 1 else 1)
    return layers, batch or 1


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
    try:
        with torch.no_grad():
            model.eval()(*inputs)
    except Exception as exc:
        raise ModelError(f"running the model on its example inputs raised {type(exc).__name__}: {exc}") from None
    finally:
        for h in handles:
            h.remove()
    layers, batch, count = [], None, {}
    for name, mod, xs in seen:
        count[name] = count.get(name, 0) + 1
        lname = name if count[name] == 1 else f"{name}#{count[name]}"   # a module called twice
        if isinstance(mod, nn.Conv2d):
            if isinstance(mod.padding, str):
                raise ModelError(f"layer {lname}: string padding {mod.padding!r} is not supported; use integers")
            layers.append(_conv_layer(lname, xs, mod.weight.shape, mod.stride, mod.padding,
                                      mod.dilation, mod.groups))
        else:
            layers.append(_linear_layer(lname, xs, mod.weight.shape))
        batch = batch or (xs[0] if len(xs) > 1 else 1)
    return layers, int(batch or 1)


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
