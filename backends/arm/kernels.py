"""One matmul kernel family instance for aarch64, run under qemu through the C driver.

``run_matmul_qemu(weight, x, ...)`` builds ``YT = act(W @ XT + bias)`` for the
weight's format with ``arm_target(cpu)``, wraps it in a one-step plan
(weight buffers and bias as constants, ``XT`` the input, ``YT`` the output),
links it with the generated C driver and runs it under qemu-aarch64.
``kernel_module`` gives the built module (its assembly is what the NEON
checks and the llvm-mca estimate read).
"""
from __future__ import annotations

import math
import shutil
import tempfile

import torch

from sparsec.backends.arm.target import arm_target


def kernel_module(weight, tokens: int, *, bias: bool = False, activation: str | None = None,
                  cpu: str | None = None, knobs: dict | None = None, name: str = "sc_kernel"):
    """(built module, symbol, args, resolved knobs) of one kernel for aarch64."""
    import tvm

    from sparsec.backends.kernels import matmul_primfunc

    target = arm_target(cpu)
    func, args, resolved = matmul_primfunc(weight, tokens, bias=bias, activation=activation, target=target,
                                           knobs=knobs, name=name)
    with target:
        mod = tvm.tirx.build(tvm.IRModule({name: func}), target=target)
    return mod, name, args, resolved


def one_step_plan(weight, args, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The executor plan of a single kernel call and its constants (without the bias values)."""
    values, consts, call = {}, {}, []
    for a in args:
        shape = [int(d) if not isinstance(d, str) else None for d in a.shape]
        if a.name in weight.buffers:
            t = getattr(weight, a.name)
            consts[f"w/{a.name}"] = t
            values[a.name] = {"kind": "const", "const": f"w/{a.name}", "shape": list(t.shape), "dtype": a.dtype}
        elif a.name == "bias":
            values["bias"] = {"kind": "const", "const": "bias", "shape": shape, "dtype": a.dtype}
        else:
            values[a.name] = {"kind": "storage", "storage": 0 if a.name == "XT" else 1, "shape": shape,
                              "dtype": a.dtype}
        call.append(a.name)
    item = torch.empty((), dtype=getattr(torch, args[-1].dtype)).element_size()
    sizes = [math.prod(values["XT"]["shape"]) * item, math.prod(values["YT"]["shape"]) * item]
    values["XT"]["kind"] = "input"
    plan = {"inputs": [{"name": "XT", "shape": values["XT"]["shape"], "dtype": values["XT"]["dtype"]}],
            "outputs": ["YT"], "storages": sizes, "values": values, "steps": [{"func": name, "args": call,
                                                                                "node": "matmul"}]}
    return plan, consts


def run_matmul_qemu(weight, x: torch.Tensor, bias: torch.Tensor | None = None, activation: str | None = None,
                    cpu: str | None = None, knobs: dict | None = None) -> torch.Tensor:
    """``act(x @ W^T + bias)`` for ``x[T, K]`` computed by the aarch64 kernel under qemu."""
    from sparsec.backends.arm.cdriver import write_c_driver
    from sparsec.backends.arm.compile import run_c_driver

    tokens = int(x.shape[0])
    mod, name, args, _ = kernel_module(weight, tokens, bias=bias is not None, activation=activation, cpu=cpu,
                                       knobs=knobs)
    plan, consts = one_step_plan(weight, args, name)
    if bias is not None:
        consts["bias"] = bias.to(x.dtype).contiguous()
    folder = tempfile.mkdtemp(prefix="sparsec-armk-")
    try:
        write_c_driver(folder, mod, plan, consts)
        (yt,) = run_c_driver(folder, plan, [x.t().contiguous()])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return yt.t().contiguous()
