"""`sparsec inspect model.py`: what the frontend sees in a model."""
from __future__ import annotations

import json

import torch

from sparsec.frontends import import_model
from sparsec.ir.graph import Graph
from sparsec.ir.printer import print_graph


def summary(g: Graph) -> dict:
    """Op counts, parameter count, and every non-scalar constant with its sparsifiability and density."""
    weight_of = {c.name: n for n, c in g.weights()}
    params = []
    for c in g.constants:
        if len(c.value.shape) == 0:
            continue
        d = c.dense()
        nz = int(torch.count_nonzero(d)) if d.numel() else 0
        n = weight_of.get(c.name)
        params.append({"name": c.name, "shape": list(c.value.shape), "dtype": c.type.dtype,
                       "format": c.format, "sparsifiable": n is not None,
                       "used_by": f"{n.op.value} %{n.name}" if n is not None else None,
                       "density": nz / d.numel() if d.numel() else 0.0})
    return {"graph": g.name, "inputs": [{"name": v.name, "type": str(v.type)} for v in g.inputs],
            "outputs": [str(g.types()[o]) for o in g.outputs], "nodes": len(g.nodes),
            "op_counts": g.op_counts(),
            "parameters": sum(c.value.numel for c in g.constants),
            "weights": params}


def print_summary(s: dict, path: str) -> None:
    print(f"model {path}")
    print("  inputs : " + ", ".join(f"%{i['name']}: {i['type']}" for i in s["inputs"]))
    print("  outputs: " + ", ".join(s["outputs"]))
    print(f"  {s['nodes']} nodes, {s['parameters']:,} parameters")
    print("  ops    : " + ", ".join(f"{k} {v}" for k, v in s["op_counts"].items()))
    print()
    print(f"  {'weight':<40}{'shape':<20}{'sparsifiable':<14}{'density':>8}  used by")
    for w in s["weights"]:
        shape = "x".join(map(str, w["shape"]))
        print(f"  {w['name']:<40}{shape:<20}{'yes' if w['sparsifiable'] else 'no':<14}{w['density']:>8.3f}"
              f"  {w['used_by'] or ''}")


def run(args) -> int:
    g, loaded = import_model(args.model)
    if args.ir:
        print(print_graph(g), end="")
        return 0
    s = summary(g)
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        print_summary(s, args.model)
    return 0


def register(sub) -> None:
    p = sub.add_parser("inspect", help="show the graph, parameters and sparsifiable weights of a model file",
                       description="Load a model file (defines `model` or `get_model()`, and `example_inputs()` "
                                   "or `EXAMPLE_INPUTS`), capture it with torch.export and summarise the IR.")
    p.add_argument("model", help="path to the model file")
    p.add_argument("--ir", action="store_true", help="print the full IR text")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=run)
