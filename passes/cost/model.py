"""Predicted kernel time for a weight format, shape and token count.

The model is linear in four exact features of the packed weight
(``features``): a fixed cost, the multiply-adds the kernel actually executes
(``macs``: non-zeros × tokens, *including wasted work* where a format computes
stored zeros — BSR block padding, N:M padding slots, dense), the bytes it
moves (the format's exact ``nbytes`` + activations in and out) and the
metadata operations it decodes (``meta``: index loads, bitmap words, block
headers):

    t = c + a·macs + b·bytes + d·meta + e·rows    (per format and regime)

Regimes: ``gemv`` (one token: memory-bound, different kernels) and ``tokens``.
Uncalibrated coefficients come from the target description (``TargetDesc``):
``a = 1/(peak·efficiency)``, ``b = 1/bandwidth of the level the weight
streams from``, ``d = 1/(cores·clock)``, ``e = 20 cycles``, ``c = launch``. Calibration fits
``(c, a, b, d, e)`` per (format, regime) by non-negative least squares on
measured micro-benchmarks (``sparsec calibrate``), stored as JSON and reused.
"""
from __future__ import annotations

import json
import math
import os

import torch
from dataclasses import asdict, dataclass, field

from sparsec.ir.formats import SparseFormat
from sparsec.passes.cost.targets import TargetDesc

# Fraction of peak FMA throughput each CPU kernel family reaches (uncalibrated default).
EFFICIENCY = {"dense": 0.6, "csr": 0.25, "bitmap": 0.12, "nm": 0.35, "bsr": 0.45, "groupquant": 0.2}


@dataclass(frozen=True)
class Features:
    macs: float
    bytes: float
    meta: float
    rows: float = 0.0     # output-row loop trips (per-row setup, reductions, tails)

    def vector(self) -> list[float]:
        return [1.0, self.macs, self.bytes, self.meta, self.rows]


@dataclass(frozen=True)
class Stats:
    """What the cost features need of a weight in a format: counts, not values.

    ``Stats.of(fmt)`` reads a packed format; ``Stats.estimate(w, name, params)``
    computes the same counts from the dense weight without packing it (exact:
    the nbytes formulas of ``sparsec.ir.formats``), so candidates are cheap.
    """

    name: str
    rows: int
    cols: int
    item: int
    nnz: int           # stored non-zeros (csr/bitmap), slots (nm), block elements (bsr), group elements (gq)
    nbytes: int
    meta: int          # index / metadata decode operations per token tile
    variant: str = ""  # the parameters that change the kernel's code (block shape, N:M, tile, group)

    @classmethod
    def of(cls, fmt: SparseFormat) -> "Stats":
        rows, k = fmt.rows, fmt.cols
        item = torch.empty((), dtype=fmt.dtype).element_size()
        name = fmt.name
        if name == "dense":
            work, meta = rows * k, 0
        elif name == "csr":
            work, meta = fmt.nnz, fmt.nnz + rows
        elif name == "bitmap":
            tr, tc = fmt.tile
            nti, ntj = fmt.grid
            work, meta = fmt.nnz, nti * ntj * tr * math.ceil(tc / 32) + fmt.nnz
        elif name == "nm":
            work = meta = rows * fmt.groups * fmt.n
        elif name == "bsr":
            r, c = fmt.block
            work, meta = fmt.nnzb * r * c, fmt.nnzb + fmt.grid[0]
            full = fmt.nnzb >= FULL_BLOCKS * fmt.grid[0] * fmt.grid[1]
        elif name == "groupquant":
            ngk = int(fmt.group_idx.numel())
            work, meta = ngk * fmt.group, ngk * (fmt.group + 2)
        else:
            raise ValueError(f"no cost features for format {name!r}")
        var = variant_of(name, fmt.param_values())
        return cls(name, rows, k, item, work, fmt.nbytes, meta, var + FULL if name == "bsr" and full else var)

    @classmethod
    def estimate(cls, w: torch.Tensor, name: str, params: dict) -> "Stats":
        rows = w.shape[0] if w.dim() > 1 else 1
        w2 = w.reshape(rows, -1)
        k = w2.shape[1]
        item = w2.element_size()
        nz = w2 != 0
        nnz = int(nz.sum())
        idx = 4 if max(k, nnz) < 2**31 else 8
        var = variant_of(name, params)
        if name == "dense":
            return cls(name, rows, k, item, rows * k, rows * k * item, 0, var)
        if name == "csr":
            return cls(name, rows, k, item, nnz, (rows + 1) * idx + nnz * (idx + item), nnz + rows, var)
        if name == "bitmap":
            tr, tc = params.get("tile", (8, 8))
            nt = math.ceil(rows / tr) * math.ceil(k / tc)
            return cls(name, rows, k, item, nnz, nt * math.ceil(tr * tc / 8) + (nt + 1) * idx + nnz * item,
                       math.ceil(rows / tr) * math.ceil(k / tc) * tr * math.ceil(tc / 32) + nnz, var)
        if name == "nm":
            n, m = params["n"], params["m"]
            slots = rows * math.ceil(k / m) * n
            return cls(name, rows, k, item, slots, slots * (item + (1 if m <= 256 else 2 if m < 2**15 else 4)), slots,
                       var)
        if name in ("bsr", "groupquant"):
            r, c = params["block"] if name == "bsr" else (1, params["group"])
            nbr, nbc = math.ceil(rows / r), math.ceil(k / c)
            p = torch.zeros(nbr * r, nbc * c, dtype=torch.bool)
            p[:rows, :k] = nz
            nblk = int(p.reshape(nbr, r, nbc, c).any(3).any(1).sum())
            if name == "bsr":
                return cls(name, rows, k, item, nblk * r * c, (nbr + 1) * idx + nblk * (idx + r * c * item),
                           nblk + nbr, var + FULL if nblk >= FULL_BLOCKS * nbr * nbc else var)
            g, bits = params["group"], params.get("bits", 4)
            return cls(name, rows, k, item, nblk * g,
                       (rows + 1) * idx + nblk * (idx + math.ceil(g * bits / 8) + 5), nblk * (g + 2), var)
        raise ValueError(f"no cost features for format {name!r}")


# BSR with (nearly) every block stored -- an unstructured weight at low sparsity -- streams its
# block rows like a dense matrix: a performance regime of its own, calibrated on its own samples
# (variant "8x8+full"); lookups fall back to the block-sparse fit ("8x8") where it is missing.
FULL_BLOCKS = 0.9
FULL = "+full"


def variant_of(name: str, params: dict) -> str:
    p = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    if name == "bsr":
        return "%dx%d" % tuple(p["block"])
    if name == "bitmap":
        return "%dx%d" % tuple(p.get("tile", (8, 8)))
    if name == "nm":
        return f"{p['n']}:{p['m']}"
    if name == "groupquant":
        return f"g{p['group']}b{p.get('bits', 4)}"
    return ""


def features(fmt, tokens: int) -> Features:
    """Exact work, traffic and metadata of ``[T, K] x W[O, K]ᵀ`` (W a format or its ``Stats``)."""
    st = fmt if isinstance(fmt, Stats) else Stats.of(fmt)
    act = (st.cols + st.rows) * tokens * st.item
    tiles = 1 if tokens == 1 else math.ceil(tokens / 16)
    return Features(float(st.nnz) * tokens, float(st.nbytes + act), float(st.meta) * tiles, float(st.rows) * tiles)


def regime(tokens: int) -> str:
    return "gemv" if tokens == 1 else "tokens"


@dataclass
class CostModel:
    target: TargetDesc
    # (format, regime) -> [c, a, b, d, e]; missing entries use the analytic defaults
    coef: dict[str, list[float]]
    source: str = "analytic"
    # (format, regime) -> {"slow", "fast", "vs_dense", "n"}: the fit's cross-validated error (calibrate.cv_error)
    error: dict[str, dict] = field(default_factory=dict)
    # (format, regime) -> [[group, tokens, macs, bytes, meta, rows, seconds], ...]: the measurements fitted
    samples: dict[str, list] = field(default_factory=dict)
    kernels: str = ""          # calibrate.kernels_hash() of the kernels measured ("" = unknown)
    cols_max: int = 0          # the largest K calibrated (0 = unknown): beyond it the model extrapolates

    @classmethod
    def analytic(cls, target: TargetDesc) -> "CostModel":
        return cls(target, {}, "analytic")

    def default_coef(self, fmt: str, nbytes: float) -> list[float]:
        t = self.target
        cycle = 1.0 / (t.cores * t.ghz * 1e9)
        return [t.launch_us * 1e-6, 2.0 / (t.peak_flops * EFFICIENCY.get(fmt, 0.2)), 1.0 / t.mem_bw(int(nbytes)),
                cycle, 20 * cycle]

    def fit_key(self, fmt: str, variant: str, tokens: int) -> str | None:
        """The calibrated fit used: this exact variant (``bsr:8x8+full/tokens``), else the variant
        without ``+full``, else the family's (``bsr/tokens``); None: analytic defaults."""
        r = regime(tokens)
        for key in (f"{fmt}:{variant}/{r}", f"{fmt}:{variant.removesuffix(FULL)}/{r}", f"{fmt}/{r}"):
            if self.coef.get(key):
                return key
        return None

    def coefficients(self, fmt: str, variant: str, tokens: int, nbytes: float) -> list[float]:
        """The fit for this exact variant (e.g. ``bsr:4x4/tokens``), else the family's, else analytic."""
        key = self.fit_key(fmt, variant, tokens)
        return self.coef[key] if key else self.default_coef(fmt, nbytes)

    def error_band(self, fmt: str, variant: str, tokens: int) -> dict | None:
        """The calibrated error of the fit :meth:`coefficients` uses (None: not calibrated)."""
        key = self.fit_key(fmt, variant, tokens)
        return self.error.get(key) if key else None

    def predict(self, fmt, tokens: int) -> float:
        """Seconds for one call; ``fmt`` is a packed format or its ``Stats``."""
        st = fmt if isinstance(fmt, Stats) else Stats.of(fmt)
        f = features(st, tokens)
        c = self.coefficients(st.name, st.variant, tokens, f.bytes)
        return sum(ci * xi for ci, xi in zip(c, f.vector()))

    # -- persistence ------------------------------------------------------------------
    def to_json(self) -> dict:
        from sparsec.passes.cost.calibrate import CALIBRATION_VERSION

        return {"version": CALIBRATION_VERSION, "target": asdict(self.target), "coef": self.coef,
                "source": self.source, "error": self.error, "samples": self.samples, "kernels": self.kernels,
                "cols_max": self.cols_max}

    @classmethod
    def from_json(cls, d: dict) -> "CostModel":
        return cls(TargetDesc(**d["target"]), {k: list(v) for k, v in d["coef"].items()}, d.get("source", "file"),
                   {k: dict(v) for k, v in d.get("error", {}).items()}, d.get("samples", {}), d.get("kernels", ""),
                   int(d.get("cols_max", 0)))

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_json(), f, indent=1)
        os.replace(tmp, path)


def fit(samples: list[tuple[Features, float]]) -> list[float]:
    """Non-negative least squares of ``t = c + a·macs + b·bytes + d·meta + e·rows`` (relative error weighted)."""
    import numpy as np
    from scipy.optimize import nnls

    A = np.array([s[0].vector() for s in samples], dtype=np.float64)
    y = np.array([s[1] for s in samples], dtype=np.float64)
    w = 1.0 / y                                   # minimise relative, not absolute, error
    scale = A.max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls((A / scale) * w[:, None], y * w)
    return list(coef / scale)
