"""Input matrices: Matrix Market files and generators.

``load_mtx(path)`` checks the file's banner, size line and entries itself (so a
malformed file is reported with its line) and reads it with ``scipy.io``.
Generators (``generate("rmat:scale=10,ef=8")``): ``rmat`` (R-MAT / Kronecker
power law), ``er`` (Erdős–Rényi), ``banded``, ``nx`` (a networkx graph's
adjacency matrix: ``nx:karate``, ``nx:les_miserables``, ``nx:florentine``,
``nx:davis``, ``nx:ba,n=..,m=..``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

from sparsec.errors import ParameterError, SerializationError

FIELDS = {"real", "integer", "pattern", "double"}
SYMMETRY = {"general", "symmetric", "skew-symmetric"}


def load_mtx(path: str | Path) -> sp.csr_matrix:
    """A Matrix Market coordinate matrix as float64 CSR (duplicates summed)."""
    path = Path(path)
    try:
        fh = open(path, "r", encoding="ascii", errors="strict")
    except FileNotFoundError:
        raise SerializationError(f"{path}: no such Matrix Market file") from None
    with fh:
        try:
            lines = fh.read().splitlines()
        except UnicodeDecodeError:
            raise SerializationError(f"{path}: not a text file (non-ASCII bytes)") from None
    if not lines or not lines[0].lower().startswith("%%matrixmarket"):
        raise SerializationError(f"{path}:1: missing '%%MatrixMarket' banner")
    banner = lines[0].lower().split()
    if len(banner) != 5 or banner[1] != "matrix":
        raise SerializationError(f"{path}:1: banner must be '%%MatrixMarket matrix <format> "
                                 f"<field> <symmetry>', got {lines[0]!r}")
    fmt, fld, sym = banner[2:]
    if fmt not in ("coordinate", "array"):
        raise SerializationError(f"{path}:1: format {fmt!r} is not coordinate or array")
    if fld not in FIELDS:
        raise SerializationError(f"{path}:1: field {fld!r} not supported "
                                 f"(use real, integer or pattern; complex is not)")
    if sym not in SYMMETRY:
        raise SerializationError(f"{path}:1: symmetry {sym!r} not supported")
    n = 1
    while n < len(lines) and (lines[n].startswith("%") or not lines[n].strip()):
        n += 1
    if n == len(lines):
        raise SerializationError(f"{path}: no size line")
    size = lines[n].split()
    want = 3 if fmt == "coordinate" else 2
    try:
        dims = [int(x) for x in size]
    except ValueError:
        raise SerializationError(f"{path}:{n + 1}: size line must be integers, got {lines[n]!r}") from None
    if len(dims) != want or min(dims) < 0:
        raise SerializationError(f"{path}:{n + 1}: size line must hold {want} non-negative "
                                 f"integers, got {lines[n]!r}")
    if fmt == "coordinate":
        rows, cols, nnz = dims
        entries = [(k + 1, ln) for k, ln in enumerate(lines[n + 1:], start=n + 1) if ln.strip()
                   and not ln.startswith("%")]
        if len(entries) != nnz:
            raise SerializationError(f"{path}: size line promises {nnz} entries, found {len(entries)}")
        per = 2 if fld == "pattern" else 3
        for lineno, ln in entries:
            parts = ln.split()
            if len(parts) != per:
                raise SerializationError(f"{path}:{lineno}: expected {per} fields, got {ln!r}")
            try:
                i, j = int(parts[0]), int(parts[1])
                if per == 3:
                    float(parts[2])
            except ValueError:
                raise SerializationError(f"{path}:{lineno}: malformed entry {ln!r}") from None
            if not (1 <= i <= rows and 1 <= j <= cols):
                raise SerializationError(f"{path}:{lineno}: index ({i}, {j}) outside the "
                                         f"{rows}x{cols} matrix")
    try:
        M = scipy.io.mmread(str(path))
    except (ValueError, IndexError, OverflowError) as exc:
        raise SerializationError(f"{path}: scipy.io could not read it: {exc}") from None
    M = sp.csr_matrix(M, dtype=np.float64)
    M.sum_duplicates()
    M.sort_indices()
    return M


def save_mtx(path: str | Path, M) -> None:
    scipy.io.mmwrite(str(path), sp.coo_matrix(M))


def rmat(scale: int, ef: int = 8, a: float = 0.57, b: float = 0.19, c: float = 0.19,
         seed: int = 0, permute: bool = True) -> sp.csr_matrix:
    """R-MAT (Kronecker) power-law matrix: 2^scale rows, ~ef * 2^scale edges
    (duplicates merged), Graph500 quadrant probabilities by default, vertices
    randomly relabelled; values uniform in [0.5, 1.5)."""
    if not 1 <= scale <= 26:
        raise ParameterError(f"rmat: scale must be in 1..26, got {scale}")
    if ef < 1:
        raise ParameterError(f"rmat: ef must be >= 1, got {ef}")
    if min(a, b, c) < 0 or a + b + c >= 1:
        raise ParameterError(f"rmat: need a, b, c >= 0 and a + b + c < 1, got {a}, {b}, {c}")
    rng = np.random.default_rng(seed)
    n, m = 1 << scale, ef << scale
    r = np.zeros(m, dtype=np.int64)
    q = np.zeros(m, dtype=np.int64)
    for level in range(scale):
        u = rng.random(m)
        right = ((u >= a) & (u < a + b)) | (u >= a + b + c)
        down = u >= a + b
        r |= down.astype(np.int64) << level
        q |= right.astype(np.int64) << level
    if permute:
        p = rng.permutation(n)
        r, q = p[r], p[q]
    vals = rng.random(m) + 0.5
    M = sp.csr_matrix((vals, (r, q)), shape=(n, n))
    M.sum_duplicates()
    return M


def erdos_renyi(n: int, m: int | None = None, avg: float = 8.0, density: float | None = None,
                seed: int = 0, cols: int | None = None) -> sp.csr_matrix:
    """Uniformly random n x cols matrix with ``avg`` non-zeros per row (or ``density``)."""
    cols = n if cols is None else cols
    if n < 1 or cols < 1:
        raise ParameterError(f"er: n and cols must be >= 1, got {n}, {cols}")
    if density is None:
        density = min(1.0, avg / cols)
    if not 0 <= density <= 1:
        raise ParameterError(f"er: density must be in [0, 1], got {density}")
    rng = np.random.default_rng(seed)
    M = sp.random(n, cols, density=density, format="csr", random_state=rng,
                  data_rvs=lambda k: rng.random(k) + 0.5)
    M.sort_indices()
    return M


def banded(n: int, bw: int = 2, seed: int = 0) -> sp.csr_matrix:
    """n x n matrix with the diagonals -bw..bw full."""
    if n < 1 or bw < 0:
        raise ParameterError(f"banded: need n >= 1 and bw >= 0, got n={n}, bw={bw}")
    rng = np.random.default_rng(seed)
    offs = list(range(-bw, bw + 1))
    diags = [rng.random(n - abs(o)) + 0.5 for o in offs]
    return sp.diags(diags, offs, shape=(n, n), format="csr")


def networkx_graph(name: str, n: int = 100, m: int = 3, seed: int = 0) -> sp.csr_matrix:
    """Adjacency matrix of a networkx graph (real small graphs ship with networkx)."""
    import networkx as nx
    graphs = {
        "karate": nx.karate_club_graph,
        "les_miserables": nx.les_miserables_graph,
        "florentine": nx.florentine_families_graph,
        "davis": nx.davis_southern_women_graph,
        "ba": lambda: nx.barabasi_albert_graph(n, m, seed=seed),
        "ws": lambda: nx.watts_strogatz_graph(n, 2 * m, 0.1, seed=seed),
    }
    if name not in graphs:
        raise ParameterError(f"nx: unknown graph {name!r} (known: {', '.join(graphs)})")
    G = graphs[name]()
    M = nx.to_scipy_sparse_array(G, weight=None, format="csr", dtype=float)
    return sp.csr_matrix(M)


GENERATORS = {
    "rmat": (rmat, {"scale": int, "ef": int, "a": float, "b": float, "c": float, "seed": int}),
    "er": (erdos_renyi, {"n": int, "avg": float, "density": float, "seed": int, "cols": int}),
    "banded": (banded, {"n": int, "bw": int, "seed": int}),
    "nx": (networkx_graph, {"name": str, "n": int, "m": int, "seed": int}),
}


def generate(spec: str) -> sp.csr_matrix:
    """Build a matrix from ``kind:key=value,...`` (``nx:karate`` is ``nx:name=karate``)."""
    kind, _, rest = spec.partition(":")
    if kind not in GENERATORS:
        raise ParameterError(f"--generate {spec!r}: unknown generator {kind!r} "
                             f"(known: {', '.join(GENERATORS)})")
    fn, types = GENERATORS[kind]
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq and kind == "nx" and "name" not in kwargs:
            key, value = "name", item
        elif not eq:
            raise ParameterError(f"--generate {spec!r}: expected key=value, got {item!r}")
        key = key.strip()
        if key not in types:
            raise ParameterError(f"--generate {spec!r}: unknown parameter {key!r} for {kind} "
                                 f"(known: {', '.join(types)})")
        try:
            kwargs[key] = types[key](value)
        except ValueError:
            raise ParameterError(f"--generate {spec!r}: {key} must be {types[key].__name__}, "
                                 f"got {value!r}") from None
    if kind == "rmat" and "scale" not in kwargs:
        raise ParameterError(f"--generate {spec!r}: rmat needs scale=")
    if kind in ("er", "banded") and "n" not in kwargs:
        raise ParameterError(f"--generate {spec!r}: {kind} needs n=")
    if kind == "nx" and "name" not in kwargs:
        raise ParameterError(f"--generate {spec!r}: nx needs a graph name")
    return sp.csr_matrix(fn(**kwargs))
