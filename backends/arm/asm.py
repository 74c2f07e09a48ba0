"""Reading the generated aarch64 assembly: loops and their NEON FMAs.

A loop is a label with a later conditional or unconditional branch back to
it; its body is the lines from the label to that branch. ``hot_loops``
returns the innermost ones (no other loop inside), where kernels do their
work; ``fmla_lanes`` lists the lane count of every vector FMA in a body.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_LABEL = re.compile(r"^([.\w$]+):")
_BRANCH = re.compile(r"^\s*(b(?:\.\w+)?|cbn?z|tbn?z)\s+(?:[^,]+,\s*)*([.\w$]+)\s*$")
_FMLA = re.compile(r"^\s*fmla\s+v\d+\.(\d+)([shd])\b")


@dataclass(frozen=True)
class Loop:
    label: str
    start: int
    end: int
    body: tuple


def kernel_asm(module, name: str | None = None) -> str:
    """The assembly of a built LLVM module (only function ``name``'s part when given)."""
    asm = module.inspect_source("asm")
    if name is None:
        return asm
    lines = asm.splitlines()
    out, inside = [], False
    for ln in lines:
        if re.match(rf"^(__tvm_ffi_)?{re.escape(name)}(_compute_)?\w*:", ln):
            inside = True
        elif inside and re.match(r"^\s*\.size\s", ln) is None and re.match(r"^[A-Za-z_][\w$]*:", ln):
            if not ln.startswith(name) and not ln.startswith("__tvm_ffi_" + name):
                inside = False
        if inside:
            out.append(ln)
    return "\n".join(out) if out else asm


def loops(asm: str) -> list[Loop]:
    lines = asm.splitlines()
    where = {}
    for i, ln in enumerate(lines):
        m = _LABEL.match(ln)
        if m:
            where[m.group(1)] = i
    found = []
    for i, ln in enumerate(lines):
        m = _BRANCH.match(ln)
        if m and m.group(2) in where and where[m.group(2)] < i:
            s = where[m.group(2)]
            found.append(Loop(m.group(2), s, i, tuple(lines[s:i + 1])))
    return found


def hot_loops(asm: str) -> list[Loop]:
    """Innermost loops: those containing no other loop."""
    ls = loops(asm)
    return [a for a in ls if not any(b is not a and a.start <= b.start and b.end <= a.end and
                                     (b.start, b.end) != (a.start, a.end) for b in ls)]


def fmla_lanes(body) -> list[int]:
    """Lane count of each vector FMA (``fmla vN.4s`` -> 4, ``.8h`` -> 8) in ``body``."""
    out = []
    for ln in body:
        m = _FMLA.match(ln)
        if m:
            out.append(int(m.group(1)))
    return out
