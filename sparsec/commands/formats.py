"""`sparsec formats`: pack a random weight into every format and compare sizes."""
from __future__ import annotations

import torch

from sparsec.ir import formats as F
from sparsec.passes import prune as P

# (label, pattern, sparsity, format, format parameters)
CASES = [
    ("dense", None, None, "dense", {}),
    ("90% unstructured CSR", "unstructured", 0.9, "csr", {}),
    ("90% unstructured bitmap 8x8", "unstructured", 0.9, "bitmap", {"tile": (8, 8)}),
    ("2:4", "2:4", None, "nm", {"n": 2, "m": 4}),
    ("2:8", "2:8", None, "nm", {"n": 2, "m": 8}),
    ("block 4x4, 90%", "block:4x4", 0.9, "bsr", {"block": (4, 4)}),
    ("GQSA 4-bit, 50% groups of 16", "group:16", 0.5, "groupquant", {"group": 16, "bits": 4}),
]


def format_table(rows: int, cols: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    out = []
    for label, pattern, sparsity, fmt, params in CASES:
        ref = w if pattern is None else P.prune(w, pattern, sparsity).weight
        packed = F.pack(ref, fmt, **params)
        packed.validate()
        err = float((packed.to_dense().float() - ref.float()).abs().max())
        out.append({"case": label, "format": fmt, "density": packed.density, "nbytes": packed.nbytes,
                    "bytes_vs_dense": packed.nbytes / packed.dense_nbytes, "max_abs_error": err})
    return out


def print_table(table: list[dict], rows: int, cols: int) -> None:
    print(f"weight {rows}x{cols} float32 ({rows * cols * 4:,} bytes dense)")
    print(f"{'case':<32}{'format':<12}{'density':>9}{'bytes':>13}{'vs dense':>10}{'round-trip err':>16}")
    for r in table:
        print(f"{r['case']:<32}{r['format']:<12}{r['density']:>9.3f}{r['nbytes']:>13,}"
              f"{r['bytes_vs_dense']:>10.3f}{r['max_abs_error']:>16.3g}")


def run(args) -> int:
    table = format_table(args.rows, args.cols, args.seed)
    if args.json:
        import json
        print(json.dumps(table, indent=1))
    else:
        print_table(table, args.rows, args.cols)
    return 0


def register(sub) -> None:
    p = sub.add_parser("formats", help="pack a random weight into every format and compare sizes")
    p.add_argument("--rows", type=int, default=768)
    p.add_argument("--cols", type=int, default=3072)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
