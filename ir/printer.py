"""The IR's stable text form and its parser (print -> parse -> print is the identity).

    graph main(%x: f32[2, 16]) {
      const %fc1.weight: f32[32, 16] csr
      const %fc1.bias: f32[32] dense
      const %c0: f32[] = 0.5
      %linear: f32[2, 32] = linear(%x, %fc1.weight, %fc1.bias)
      %gelu: f32[2, 32] = gelu(%linear) {approximate="tanh"}
      return %gelu
    }

Constant data is not part of the text (weights are megabytes): a constant line
names its type and format (``nm(m=4, n=2)``) and ``parse`` takes the data from a
mapping of constants; 0-d constants carry their value inline.
"""
from __future__ import annotations

import ast
import math
import re
from typing import Any, Mapping

import torch

from sparsec.ir.errors import ModelError
from sparsec.ir.formats import Dense, SparseFormat
from sparsec.ir.graph import Constant, Graph, Value, make_node
from sparsec.ir.types import TensorType, dtype_of_short, torch_dtype


def fmt_value(v: Any) -> str:
    """A Python literal, except non-finite floats print as inf / -inf / nan."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        inner = ", ".join(fmt_value(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v)


_NONFINITE = re.compile(r"(?<![\w.])(-?)inf(?![\w.])")


def parse_value(text: str) -> Any:
    text = text.strip()
    if text == "nan":
        return float("nan")
    try:
        return ast.literal_eval(_NONFINITE.sub(lambda m: f"{m[1]}1e999", text))
    except (ValueError, SyntaxError):
        raise ModelError(f"IR text: bad value {text!r}") from None


def fmt_type(t: TensorType) -> str:
    return str(t)


def _fmt_format(f: SparseFormat) -> str:
    params = f.param_values()
    if not params:
        return f.name
    inner = ", ".join(f"{k}={fmt_value(tuple(v) if isinstance(v, list) else v)}" for k, v in sorted(params.items()))
    return f"{f.name}({inner})"


def print_graph(g: Graph) -> str:
    args = ", ".join(f"%{v.name}: {fmt_type(v.type)}" for v in g.inputs)
    lines = [f"graph {g.name}({args}) {{"]
    for c in g.constants:
        line = f"  const %{c.name}: {fmt_type(c.type)} {_fmt_format(c.value)}"
        if len(c.value.shape) == 0:
            line += f" = {fmt_value(c.dense().item())}"
        lines.append(line)
    for n in g.nodes:
        ins = ", ".join(f"%{i}" for i in n.inputs)
        attrs = ", ".join(f"{k}={fmt_value(v)}" for k, v in n.attrs)
        lines.append(f"  %{n.name}: {fmt_type(n.type)} = {n.op.value}({ins})" + (f" {{{attrs}}}" if attrs else ""))
    lines.append("  return " + ", ".join(f"%{o}" for o in g.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- parser -----------------------------------------------------------------------------
_NAME = r"%([\w.]+)"
_TYPE = r"(\w+)\[([\d, ]*)\]"
_HEAD = re.compile(r"^graph\s+([\w.]+)\((.*)\)\s*\{$")
_ARG = re.compile(rf"^{_NAME}:\s*{_TYPE}$")
_CONST = re.compile(rf"^const\s+{_NAME}:\s*{_TYPE}\s+(\w+)(?:\((.*?)\))?(?:\s*=\s*(.+))?$")
_NODE = re.compile(rf"^{_NAME}:\s*{_TYPE}\s*=\s*(\w+)\((.*?)\)(?:\s*\{{(.*)\}})?$")
_RET = re.compile(r"^return\s*(.*)$")


def _split_top(text: str) -> list[str]:
    """Split at commas not inside brackets or quotes."""
    parts, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts]


def _kv(text: str, lineno: int) -> dict[str, Any]:
    out = {}
    for part in _split_top(text or ""):
        if "=" not in part:
            raise ModelError(f"IR text line {lineno}: expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def _type(dt: str, dims: str) -> TensorType:
    shape = tuple(int(d) for d in dims.split(",") if d.strip())
    return TensorType(shape, dtype_of_short(dt))


def parse_graph(text: str, constants: Mapping[str, SparseFormat | Constant] | None = None) -> Graph:
    """Parse the text form; constant data comes from ``constants`` (by name), 0-d ones may be inline."""
    constants = dict(constants or {})
    lines = [(i + 1, ln.split("#", 1)[0].strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln]
    if not lines:
        raise ModelError("IR text: empty")
    lineno, head = lines[0]
    m = _HEAD.match(head)
    if not m:
        raise ModelError(f"IR text line {lineno}: expected 'graph NAME(args) {{', got {head!r}")
    name = m[1]
    inputs, types = [], {}
    for a in _split_top(m[2]):
        am = _ARG.match(a)
        if not am:
            raise ModelError(f"IR text line {lineno}: bad argument {a!r}")
        t = _type(am[2], am[3])
        inputs.append(Value(am[1], t))
        types[am[1]] = t
    consts, nodes, outputs = [], [], None
    for lineno, ln in lines[1:]:
        if ln == "}":
            break
        if cm := _CONST.match(ln):
            cname, t = cm[1], _type(cm[2], cm[3])
            if cname in constants:
                v = constants[cname]
                v = v.value if isinstance(v, Constant) else v
            elif cm[6] is not None and len(t.shape) == 0:
                v = Dense.from_dense(torch.tensor(parse_value(cm[6]), dtype=torch_dtype(t.dtype)))
            else:
                raise ModelError(f"IR text line {lineno}: no data given for constant %{cname}")
            if v.name != cm[4]:
                raise ModelError(f"IR text line {lineno}: constant %{cname} is {v.name}, text says {cm[4]}")
            c = Constant(cname, v)
            if c.type != t:
                raise ModelError(f"IR text line {lineno}: constant %{cname} has type {c.type}, text says {t}")
            consts.append(c)
            types[cname] = t
        elif nm := _NODE.match(ln):
            nname, t, opname = nm[1], _type(nm[2], nm[3]), nm[4]
            ins = [s[1:] if s.startswith("%") else s for s in _split_top(nm[5])]
            try:
                node = make_node(nname, opname, ins, _kv(nm[6], lineno), types)
            except ValueError:
                raise ModelError(f"IR text line {lineno}: unknown op {opname!r}") from None
            if node.type != t:
                raise ModelError(f"IR text line {lineno}: %{nname} is {node.type} by inference, text says {t}")
            nodes.append(node)
            types[nname] = t
        elif rm := _RET.match(ln):
            outputs = tuple(s[1:] for s in _split_top(rm[1]))
        else:
            raise ModelError(f"IR text line {lineno}: cannot parse {ln!r}")
    if outputs is None:
        raise ModelError("IR text: missing 'return'")
    return Graph(tuple(inputs), tuple(consts), tuple(nodes), outputs, name)
