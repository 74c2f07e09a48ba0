"""`sparsec run out.sparsec --input x.npy [--output y.npy]`: run a compiled artifact."""
from __future__ import annotations

import os

import numpy as np

from sparsec.ir.errors import ParameterError, SerializationError


def run(args) -> int:
    import sparsec

    model = sparsec.load(args.artifact)
    specs = model.inputs
    if len(args.input) != len(specs):
        names = ", ".join(f"{s['name']}: {s['dtype']}{s['shape']}" for s in specs)
        raise ParameterError(f"{args.artifact} takes {len(specs)} input(s) ({names}); got {len(args.input)} --input")
    xs = []
    for path in args.input:
        try:
            xs.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise SerializationError(f"--input {path}: cannot read a .npy array ({exc})") from None
    # a dispatch artifact (docs/dispatch.md) has one input list per variant: the shapes pick one
    variants = getattr(model, "variant_inputs", None) or [specs]
    if not any(all(list(x.shape) == list(s["shape"]) and str(x.dtype) == s["dtype"] for x, s in zip(xs, v))
               for v in variants):
        if len(variants) == 1:
            for path, x, s in zip(args.input, xs, specs):
                if list(x.shape) != list(s["shape"]) or str(x.dtype) != s["dtype"]:
                    raise ParameterError(f"--input {path}: expected {s['dtype']}{s['shape']} for input "
                                         f"{s['name']}, got {x.dtype}{list(x.shape)}")
        got = ", ".join(f"{x.dtype}{list(x.shape)}" for x in xs)
        avail = "; ".join("(" + ", ".join(f"{s['dtype']}{s['shape']}" for s in v) + ")" for v in variants)
        raise ParameterError(f"--input: no variant of {args.artifact} takes ({got}); available: {avail}")
    outs = model(*xs)
    for i, o in enumerate(outs):
        print(f"output {i}: {o.dtype}{list(o.shape)}  mean {float(np.mean(o)):.6g}  "
              f"max|.| {float(np.max(np.abs(o))) if o.size else 0.0:.6g}")
    if args.output:
        tmp = args.output + ".tmp"
        if len(outs) == 1:
            with open(tmp, "wb") as f:
                np.save(f, outs[0], allow_pickle=False)
        else:
            with open(tmp, "wb") as f:
                np.savez(f, *outs)
        os.replace(tmp, args.output)
        print(f"wrote {args.output}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run a compiled artifact on .npy inputs")
    p.add_argument("artifact", help="artifact directory written by `sparsec compile`")
    p.add_argument("--input", action="append", default=[], help=".npy file, one per model input, in order")
    p.add_argument("--output", help="write the output (.npy; several outputs: .npz)")
    p.set_defaults(func=run)
