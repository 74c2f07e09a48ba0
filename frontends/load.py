"""Loading a model file and capturing it with torch.export.

The model-file convention: a Python file defining either ``model`` (an
``nn.Module``) or ``get_model()``, and either ``example_inputs()`` or
``EXAMPLE_INPUTS`` (a tuple of tensors). Optionally ``dispatch_inputs()`` or
``DISPATCH_INPUTS``: a list of further example-input tuples (e.g. the decode
shape beside the prefill one); `sparsec compile` then builds one variant per
shape and the artifact dispatches by the runtime shape (docs/dispatch.md).
``import_model(path)`` returns the IR graph; every failure is one ``ModelError``
naming the file and what is wrong.
"""
from __future__ import annotations

import os
import runpy
import sys
import traceback
import warnings
from dataclasses import dataclass

import torch

from sparsec.frontends.lower import FxLowering
from sparsec.ir.errors import ModelError
from sparsec.ir.graph import Graph

# CompositeImplicit ops kept whole, so the IR sees linear/conv/layer_norm as one node
# (sparse weights are found on linear and conv nodes).
KEEP = ("linear", "conv2d", "layer_norm", "silu", "baddbmm")


@dataclass
class LoadedModel:
    path: str
    model: torch.nn.Module
    example_inputs: tuple
    dispatch_inputs: tuple = ()     # extra example-input tuples (shape-aware dispatch), () if none


def _file_line(exc: BaseException, path: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == path]
    return f"{path}:{frames[-1].lineno}" if frames else path


def load_model(path: str | os.PathLike) -> LoadedModel:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such model file")
    sys.path.insert(0, os.path.dirname(path))
    try:
        try:
            ns = runpy.run_path(path, run_name="__sparsec_model__")
        except SyntaxError as exc:
            raise ModelError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
        except Exception as exc:
            raise ModelError(f"{_file_line(exc, path)}: the model file raised {type(exc).__name__}: {exc}") from None
        if "model" in ns:
            model = ns["model"]
        elif callable(ns.get("get_model")):
            try:
                model = ns["get_model"]()
            except Exception as exc:
                raise ModelError(f"{_file_line(exc, path)}: get_model() raised {type(exc).__name__}: {exc}") from None
        else:
            raise ModelError(f"{path}: defines neither `model` (an nn.Module) nor `get_model()`")
        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"{path}: `model` must be a torch.nn.Module, got {type(model).__name__}")
        if callable(ns.get("example_inputs")):
            try:
                inputs = ns["example_inputs"]()
            except Exception as exc:
                raise ModelError(f"{_file_line(exc, path)}: example_inputs() raised "
                                 f"{type(exc).__name__}: {exc}") from None
        elif "EXAMPLE_INPUTS" in ns:
            inputs = ns["EXAMPLE_INPUTS"]
        else:
            raise ModelError(f"{path}: defines neither `example_inputs()` nor `EXAMPLE_INPUTS`")
        dispatch = ()
        if callable(ns.get("dispatch_inputs")):
            try:
                dispatch = ns["dispatch_inputs"]()
            except Exception as exc:
                raise ModelError(f"{_file_line(exc, path)}: dispatch_inputs() raised "
                                 f"{type(exc).__name__}: {exc}") from None
        elif "DISPATCH_INPUTS" in ns:
            dispatch = ns["DISPATCH_INPUTS"]
    finally:
        sys.path.remove(os.path.dirname(path))
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list)) or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ModelError(f"{path}: example inputs must be a tuple of tensors")
    return LoadedModel(path, model.eval(), tuple(inputs), _dispatch_inputs(path, dispatch, len(inputs)))


def _dispatch_inputs(path: str, dispatch, n_inputs: int) -> tuple[tuple, ...]:
    """Validate the model file's dispatch inputs: a list of tuples of tensors, each as long as example_inputs."""
    if dispatch is None:
        return ()
    if not isinstance(dispatch, (tuple, list)):
        raise ModelError(f"{path}: dispatch inputs must be a list of tuples of tensors, "
                         f"got {type(dispatch).__name__}")
    out = []
    for i, entry in enumerate(dispatch):
        if isinstance(entry, torch.Tensor):
            entry = (entry,)
        if not isinstance(entry, (tuple, list)) or not all(isinstance(x, torch.Tensor) for x in entry):
            raise ModelError(f"{path}: dispatch inputs entry {i} must be a tuple of tensors")
        if len(entry) != n_inputs:
            raise ModelError(f"{path}: dispatch inputs entry {i} has {len(entry)} tensor(s); "
                             f"the example inputs have {n_inputs}")
        out.append(tuple(entry))
    return tuple(out)


def decompositions():
    table = torch.export.default_decompositions()
    for name in KEEP:
        table.pop(getattr(torch.ops.aten, name).default, None)
    return table


def capture(model: torch.nn.Module, inputs: tuple, where: str = "model") -> torch.export.ExportedProgram:
    """torch.export + decomposition to the core ATen set (keeping KEEP whole)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ep = torch.export.export(model.eval(), tuple(inputs))
            return ep.run_decompositions(decompositions())
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(f"{where}: torch.export failed: {type(exc).__name__}: {first}") from None


def lower_exported(ep: torch.export.ExportedProgram, name: str = "main", source_file: str | None = None) -> Graph:
    sig = ep.graph_signature
    state = {**ep.state_dict, **ep.constants}
    params, names = {}, {}
    for spec in sig.input_specs:
        if spec.kind.name in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            params[spec.arg.name] = state[spec.target].detach()
            names[spec.arg.name] = spec.target
    user = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    return FxLowering(ep.graph_module, params, user_inputs=user, name=name, source_file=source_file,
                      param_names=names).run()


def import_model(path: str | os.PathLike) -> tuple[Graph, LoadedModel]:
    loaded = load_model(path)
    ep = capture(loaded.model, loaded.example_inputs, where=loaded.path)
    try:
        g = lower_exported(ep, source_file=loaded.path)
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    return g, loaded


def import_module(model: torch.nn.Module, inputs: tuple, name: str = "main") -> Graph:
    """Capture and lower an in-memory module (tests, Python API)."""
    return lower_exported(capture(model, inputs), name=name)
