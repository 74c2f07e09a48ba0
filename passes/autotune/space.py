"""The search space of one sparse layer: candidate formats (with their parameters)
× the schedule knobs their kernel families declare.

Formats come from the format-selection pass (``auto_candidates``: dense, CSR,
bitmap, BSR block shapes, N:M when the weight follows it) plus bitmap tile
variants. Knobs come from ``FAMILIES[fmt].knobs`` (each a ``Knob(name,
candidates, default)``): nothing about them is hard-coded here. A knob whose
values all generate the same TIR for this layer (e.g. ``lanes`` when T > 1)
is found by ``relevant_knobs`` -- it instantiates the family once per value
and compares structural hashes -- and pinned to its default, so the space
holds no configurations that would measure the same kernel twice.

Also here: the ``TuningKey`` of a (layer, format) and the target/machine
signatures it contains.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
from dataclasses import dataclass

import torch

from sparsec.passes.autotune.db import TuningKey, canon_knobs

# Extra bitmap tiles tried beside the selection pass's (8, 8).
BITMAP_TILES = ((8, 8), (16, 16), (4, 32))
TESTING_ONLY_CORRUPT = "_TESTING_ONLY_corrupt"
_RELEVANT: dict = {}     # (format, params, regime, shape, target) -> names of knobs that change the TIR


@dataclass(frozen=True)
class Config:
    """One point of the space: a format with parameters and a full knob assignment."""

    format: str
    params: tuple            # ((name, value), ...) sorted
    knobs: tuple             # ((name, value), ...) sorted

    @classmethod
    def make(cls, fmt: str, params: dict, knobs: dict) -> "Config":
        def tup(v):
            return tuple(v) if isinstance(v, list) else v
        return cls(fmt, tuple(sorted((k, tup(v)) for k, v in params.items())),
                   tuple(sorted((k, tup(v)) for k, v in knobs.items())))

    @property
    def params_dict(self) -> dict:
        return dict(self.params)

    @property
    def knobs_dict(self) -> dict:
        return dict(self.knobs)

    @property
    def fmt_label(self) -> str:
        p = ",".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in self.params)
        return self.format + (f"({p})" if p else "")

    @property
    def label(self) -> str:
        k = ",".join(f"{n}={v}" for n, v in self.knobs if v is not None)
        return self.fmt_label + (f"[{k}]" if k else "[default]")

    def canon(self) -> str:
        return canon_knobs(self.knobs_dict)


# -- signatures --------------------------------------------------------------------------------
def versions() -> str:
    import tvm

    from sparsec import __version__
    return f"sparsec={__version__};tvm={tvm.__version__}"


def target_signature(target) -> str:
    """The target as a canonical string (kind, triple, cpu, cores, attrs)."""
    import json

    import tvm

    from sparsec.backends.target import host_target

    if target is None:
        target = host_target()
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    d = json.loads(str(target))
    d.pop("tag", None)
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=None)
def host_features() -> str:
    """CPU model + ISA flags of this machine, digested (two machines with the same target string
    but different microarchitecture features do not share timings)."""
    from sparsec.backends.target import cpu_model

    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                    break
    except OSError:
        pass
    model = cpu_model()
    return f"{model}|{hashlib.sha1(flags.encode()).hexdigest()[:12]}"


def stored_fraction(w2: torch.Tensor, fmt: str, params: dict) -> float:
    """Fraction of the matrix the format stores (and its kernel computes): the pattern signature."""
    from sparsec.passes.cost.model import Stats

    st = Stats.estimate(w2, fmt, params)
    return st.nnz / max(st.rows * st.cols, 1)


def signature(stored: float) -> str:
    return f"stored={stored:.2f}"


def make_key(fmt: str, params: dict, shape: tuple, dtype: str, stored: float, target_sig: str,
             features: str, versions_: str) -> TuningKey:
    c = Config.make(fmt, params, {})
    return TuningKey("matmul", tuple(int(s) for s in shape), dtype, fmt, c.params, signature(stored),
                     target_sig, features, versions_)


def key_of_format(fmt_obj, tokens: int, target_sig: str, features: str, versions_: str) -> TuningKey:
    """The key of a packed weight (what ``sparsec compile`` looks up)."""
    from sparsec.ir.formats import dtype_name
    from sparsec.passes.cost.model import Stats

    st = Stats.of(fmt_obj)
    params = {p: getattr(fmt_obj, p) for p in fmt_obj.params}
    return make_key(fmt_obj.name, params, (fmt_obj.rows, fmt_obj.cols, int(tokens)), dtype_name(fmt_obj.dtype),
                    st.nnz / max(fmt_obj.rows * fmt_obj.cols, 1), target_sig, features, versions_)


# -- formats -----------------------------------------------------------------------------------
def format_candidates(w2: torch.Tensor, pattern=None, lossy_ok: bool = False) -> list[tuple[str, dict]]:
    """(format, params) that represent ``w2`` exactly: the selection pass's plus bitmap tiles."""
    from sparsec.passes.select import auto_candidates

    out = []
    for name, params in auto_candidates(w2, pattern, lossy_ok):
        if name == "bitmap":
            out += [("bitmap", {"tile": t}) for t in BITMAP_TILES]
        else:
            out.append((name, dict(params)))
    seen, uniq = set(), []
    for name, params in out:
        c = Config.make(name, params, {})
        if (c.format, c.params) not in seen:
            seen.add((c.format, c.params))
            uniq.append((name, params))
    return uniq


def meta_for(w2: torch.Tensor, fmt: str, params: dict):
    """The ``WeightMeta`` of ``w2`` packed as ``fmt`` (packs it: buffer dtypes depend on sizes)."""
    from sparsec.backends.kernels import WeightMeta
    return WeightMeta.of(pack(w2, fmt, params))


def pack(w2: torch.Tensor, fmt: str, params: dict):
    from sparsec.passes.select import Choice, pack_choice
    return pack_choice(w2, Choice("w", fmt, dict(params), 0.0, ""))


class FormatSpace:
    """Knob space of one (format, params) for one layer: relevant knobs and their candidates."""

    def __init__(self, w2: torch.Tensor, fmt: str, params: dict, tokens: int, target=None):
        from sparsec.backends.kernels import FAMILIES

        self.format, self.params, self.tokens = fmt, dict(params), int(tokens)
        self.family = FAMILIES[fmt]
        self.defaults = {k.name: k.default for k in self.family.knobs}
        self.meta = meta_for(w2, fmt, params)
        self.target = target
        self.choices = self.relevant_knobs()

    def _hash(self, knobs: dict):
        import tvm_ffi

        from sparsec.backends.kernels import matmul_primfunc
        try:
            func, _, _ = matmul_primfunc(self.meta, self.tokens, target=self.target, knobs=knobs)
        except Exception:          # a knob value the family refuses for this shape: not in the space
            return None
        return tvm_ffi.structural_hash(func)

    def _resolved(self, knobs: dict):
        """The schedule's resolved knob values (None -> what it derives, t_tile clamped), or None if refused."""
        from sparsec.backends.kernels.build import _target
        from sparsec.backends.kernels.common import MatmulSpec
        from sparsec.backends.kernels.schedules.llvm import llvm_plan
        try:
            spec = MatmulSpec(self.tokens, self.meta.rows, self.meta.cols, False, None, self.meta.dtype)
            plan = llvm_plan(self.family, self.meta, spec, self.family.check_knobs(knobs), _target(self.target))
        except Exception:
            return None
        return tuple(sorted(plan.knobs.items()))

    def relevant_knobs(self) -> dict[str, list]:
        """Per knob, the values that resolve differently, for the knobs that change the TIR at all.

        Relevance (does some other value change the generated TIR?) is probed once per
        (format, params, regime) with one alternative value per knob; values that the
        schedule resolves to the same plan (``None`` = the derived default) are merged.
        """
        regime = "gemv" if self.tokens == 1 else "tokens"
        ck = (self.format, Config.make(self.format, self.params, {}).params, regime, self.meta.rows,
              self.meta.cols, str(self.target))
        relevant = _RELEVANT.get(ck)
        base = self._resolved(self.defaults)
        if relevant is None:
            h0 = self._hash(self.defaults)
            relevant = set()
            for k in self.family.knobs:
                for v in k.candidates:
                    r = self._resolved({**self.defaults, k.name: v})
                    if v == k.default or r is None or r == base:
                        continue
                    h = self._hash({**self.defaults, k.name: v})
                    if h is not None and h != h0:
                        relevant.add(k.name)
                    break          # one alternative decides relevance
            _RELEVANT[ck] = relevant
        out = {}
        for k in self.family.knobs:
            if k.name not in relevant:
                continue
            vals, seen = [k.default], {base}
            for v in k.candidates:
                r = self._resolved({**self.defaults, k.name: v})
                if r is None or r in seen:
                    continue
                seen.add(r)
                vals.append(v)
            if len(vals) > 1:
                out[k.name] = vals
        return out

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.choices.values())

    def default(self) -> Config:
        return Config.make(self.format, self.params, self.defaults)

    def all(self):
        names = list(self.choices)
        for vals in itertools.product(*(self.choices[n] for n in names)):
            yield Config.make(self.format, self.params, {**self.defaults, **dict(zip(names, vals))})

    def random(self, rng: random.Random) -> Config:
        return Config.make(self.format, self.params,
                           {**self.defaults, **{n: rng.choice(v) for n, v in self.choices.items()}})

    def mutate(self, c: Config, rng: random.Random) -> Config:
        if not self.choices:
            return c
        knobs = c.knobs_dict
        name = rng.choice(list(self.choices))
        knobs[name] = rng.choice([v for v in self.choices[name] if v != knobs.get(name)] or self.choices[name])
        return Config.make(self.format, self.params, knobs)

    def crossover(self, a: Config, b: Config, rng: random.Random) -> Config:
        ka, kb = a.knobs_dict, b.knobs_dict
        return Config.make(self.format, self.params,
                           {n: (ka if rng.random() < 0.5 else kb).get(n, self.defaults[n]) for n in self.defaults})
