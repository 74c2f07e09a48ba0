"""The sparse tensor formats: one immutable value class per format.

Every format stores a tensor of logical ``shape`` viewed as a matrix
``[rows, K]`` (``rows = shape[0]``, ``K`` = product of the other dimensions; a
1-D tensor is one row). ``K`` is the reduction dimension of a weight stored as
``[out, in]``; every structured pattern runs along it.

Each class provides

- ``from_dense(dense, ...)``: pack a tensor whose zeros already follow the
  format's pattern; refuses (``PatternError``) when they don't,
- ``to_dense()``: the exact tensor back (``GroupQuant``: the dequantised one),
- ``nbytes``: values + metadata, by the formula in the class docstring,
- ``nnz`` / ``density``: stored non-zeros over the logical element count,
- ``validate()``: checks every invariant, raising ``FormatError`` naming the one broken,
- ``==``: same class, parameters and buffers,
- ``to_arrays()`` / ``from_arrays(header, arrays)``: plain numpy arrays plus a
  small JSON-able header (no pickle); ``save(dir)`` / ``load(dir)`` on disk.

Buffers are CPU torch tensors. Values are immutable by contract: a format never
writes to its buffers after construction, and callers must not either.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from sparsec.ir.errors import FormatError, ParameterError, PatternError, SerializationError

VALUE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPE_NAMES = {v: k for k, v in VALUE_DTYPES.items()}
# numpy has no bfloat16: such buffers travel as their raw 16-bit patterns.
_RAW16 = {torch.bfloat16: torch.int16}
_INT_DTYPES = {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16,
               "int32": torch.int32, "int64": torch.int64, "bool": torch.bool, "float64": torch.float64}
_ALL_DTYPES = {**VALUE_DTYPES, **_INT_DTYPES}
_ALL_NAMES = {v: k for k, v in _ALL_DTYPES.items()}

FORMAT_VERSION = 1


def dtype_name(dtype: torch.dtype) -> str:
    return _ALL_NAMES[dtype]


def index_dtype(max_value: int) -> torch.dtype:
    """int32 when every index (and count) fits, else int64."""
    return torch.int32 if max_value < 2**31 else torch.int64


def smallest_uint(max_value: int) -> torch.dtype:
    """Smallest integer type holding ``0..max_value``."""
    if max_value < 2**8:
        return torch.uint8
    if max_value < 2**15:
        return torch.int16
    return torch.int32


def matrix_dims(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        raise ParameterError("a sparse format needs a tensor of at least 1 dimension, got a scalar")
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def _as_tensor(dense, where: str, any_tensor: bool = False) -> torch.Tensor:
    if isinstance(dense, np.ndarray):
        dense = torch.from_numpy(np.ascontiguousarray(dense))
    if not isinstance(dense, torch.Tensor):
        raise ParameterError(f"{where}: expected a torch.Tensor or numpy array, got {type(dense).__name__}")
    if any_tensor:
        if dense.dtype not in _ALL_NAMES:
            raise ParameterError(f"{where}: dtype {dense.dtype} is not supported")
        return dense.detach().to("cpu").contiguous()
    if dense.dtype not in _DTYPE_NAMES:
        raise ParameterError(f"{where}: dtype {dense.dtype} is not supported; "
                             f"use one of {', '.join(VALUE_DTYPES)}")
    if dense.dim() == 0:
        raise ParameterError(f"{where}: expected a tensor of at least 1 dimension, got a scalar")
    return dense.detach().to("cpu").contiguous()


def _matrix(dense: torch.Tensor) -> torch.Tensor:
    rows, k = matrix_dims(tuple(dense.shape))
    return dense.reshape(rows, k)


def _check(cond, fmt: str, invariant: str) -> None:
    if not bool(cond):
        raise FormatError(f"{fmt}: invariant broken: {invariant}")


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass(frozen=True, eq=False, repr=False)
class SparseFormat:
    """Base of the format classes (fields: logical shape and value dtype)."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    name: ClassVar[str] = ""
    # Names of the tensor fields, in serialisation order.
    buffers: ClassVar[tuple[str, ...]] = ()
    # Names of the integer parameters, in serialisation order.
    params: ClassVar[tuple[str, ...]] = ()

    # -- common API ---------------------------------------------------------
    @property
    def rows(self) -> int:
        return matrix_dims(self.shape)[0]

    @property
    def cols(self) -> int:
        return matrix_dims(self.shape)[1]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    @property
    def dense_nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(getattr(self, b)) for b in self.buffers)

    @property
    def nnz(self) -> int:
        raise NotImplementedError

    @property
    def density(self) -> float:
        return self.nnz / self.numel if self.numel else 0.0

    def to_dense(self) -> torch.Tensor:
        raise NotImplementedError

    def validate(self) -> None:
        raise NotImplementedError

    def arrays(self) -> dict[str, torch.Tensor]:
        return {b: getattr(self, b) for b in self.buffers}

    def param_values(self) -> dict[str, object]:
        return {p: _jsonable(getattr(self, p)) for p in self.params}

    def __eq__(self, other) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        if self.shape != other.shape or self.dtype != other.dtype:
            return False
        if self.param_values() != other.param_values():
            return False
        return all(a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
                   for a, b in zip(self.arrays().values(), other.arrays().values()))

    def __hash__(self) -> int:
        return hash((self.name, self.shape, self.dtype, tuple(self.param_values().items()), self.nnz))

    def __repr__(self) -> str:
        ps = "".join(f", {k}={v}" for k, v in self.param_values().items())
        return (f"{type(self).__name__}(shape={self.shape}, dtype={dtype_name(self.dtype)}{ps}, "
                f"nnz={self.nnz}, nbytes={self.nbytes})")

    # -- serialisation --------------------------------------------------------
    def header(self) -> dict:
        return {"format": self.name, "version": FORMAT_VERSION, "shape": list(self.shape),
                "dtype": dtype_name(self.dtype), "params": self.param_values(),
                "buffers": {b: dtype_name(t.dtype) for b, t in self.arrays().items()}}

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        out = {}
        for b, t in self.arrays().items():
            t = t.contiguous()
            out[b] = t.view(_RAW16[t.dtype]).numpy().copy() if t.dtype in _RAW16 else t.numpy().copy()
        return self.header(), out

    @staticmethod
    def from_arrays(header: dict, arrays: dict[str, np.ndarray]) -> "SparseFormat":
        try:
            cls = FORMATS[header["format"]]
            if header.get("version") != FORMAT_VERSION:
                raise SerializationError(f"format header: unsupported version {header.get('version')!r}")
            dtype = (_ALL_DTYPES if cls is Dense else VALUE_DTYPES)[header["dtype"]]
            shape = tuple(int(s) for s in header["shape"])
            params = {p: _from_json(header["params"][p]) for p in cls.params}
            bufs = {}
            for b in cls.buffers:
                want = _ALL_DTYPES[header["buffers"][b]]
                arr = arrays[b]
                if not isinstance(arr, np.ndarray) or arr.dtype == object:
                    raise SerializationError(f"{cls.name} buffer {b!r}: expected a plain numeric array")
                t = torch.from_numpy(np.ascontiguousarray(arr))
                bufs[b] = t.view(want) if want in _RAW16 else t
                if bufs[b].dtype != want:
                    raise SerializationError(f"{cls.name} buffer {b!r}: header says {header['buffers'][b]}, "
                                             f"array is {arr.dtype}")
        except KeyError as exc:
            raise SerializationError(f"format header/arrays: missing or unknown key {exc}") from None
        obj = cls(shape=shape, dtype=dtype, **params, **bufs)
        obj.validate()
        return obj

    def save(self, path: str | os.PathLike) -> None:
        """Write ``header.json`` and one ``.npy`` per buffer into directory ``path`` (atomically)."""
        path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(path))
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
        header, arrays = self.to_arrays()
        for b, a in arrays.items():
            np.save(os.path.join(tmp, f"{b}.npy"), a, allow_pickle=False)
        with open(os.path.join(tmp, "header.json"), "w") as f:
            json.dump(header, f, indent=1)
        if os.path.exists(path):
            raise ParameterError(f"save: {path} already exists")
        os.rename(tmp, path)

    @staticmethod
    def load(path: str | os.PathLike) -> "SparseFormat":
        path = os.fspath(path)
        try:
            with open(os.path.join(path, "header.json")) as f:
                header = json.load(f)
            arrays = {b: np.load(os.path.join(path, f"{b}.npy"), allow_pickle=False)
                      for b in header["buffers"]}
        except (OSError, ValueError, KeyError) as exc:
            raise SerializationError(f"{path}: cannot read format: {exc}") from None
        return SparseFormat.from_arrays(header, arrays)

    # -- helpers for subclasses ----------------------------------------------
    def _check_common(self) -> None:
        _check(isinstance(self.shape, tuple) and all(isinstance(s, int) and s >= 0 for s in self.shape)
               and len(self.shape) >= 1, self.name, f"shape {self.shape} is a tuple of non-negative ints")
        _check(self.dtype in _DTYPE_NAMES, self.name, f"dtype {self.dtype} is one of {list(VALUE_DTYPES)}")
        for b, t in self.arrays().items():
            _check(isinstance(t, torch.Tensor) and t.device.type == "cpu", self.name,
                   f"buffer {b!r} is a CPU torch tensor")


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _from_json(v):
    return tuple(v) if isinstance(v, list) else v


# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Dense(SparseFormat):
    """The tensor as is. ``nbytes = numel * itemsize``.

    Unlike the sparse formats, Dense holds any shape (0-d included) and any IR
    dtype (integer and bool constants of a graph are Dense too).
    """

    values: torch.Tensor = None
    name: ClassVar[str] = "dense"
    buffers: ClassVar[tuple[str, ...]] = ("values",)

    @classmethod
    def from_dense(cls, dense) -> "Dense":
        t = _as_tensor(dense, "Dense.from_dense", any_tensor=True)
        return cls(tuple(t.shape), t.dtype, values=t.clone())

    @property
    def nnz(self) -> int:
        return int(torch.count_nonzero(self.values))

    def to_dense(self) -> torch.Tensor:
        return self.values.clone()

    def validate(self) -> None:
        _check(isinstance(self.values, torch.Tensor) and self.dtype in _ALL_NAMES, self.name,
               "values is a torch tensor of a supported dtype")
        _check(tuple(self.values.shape) == self.shape, self.name, f"values shape {tuple(self.values.shape)} == {self.shape}")
        _check(self.values.dtype == self.dtype, self.name, f"values dtype {self.values.dtype} == {self.dtype}")


# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class CSR(SparseFormat):
    """Compressed sparse rows over the ``[rows, K]`` view.

    ``indptr[rows+1]``, ``indices[nnz]`` (column, sorted and unique within a row),
    ``values[nnz]``; index buffers are int32 when K and nnz fit, else int64.
    ``nbytes = (rows+1)*idx + nnz*idx + nnz*itemsize``.
    """

    indptr: torch.Tensor = None
    indices: torch.Tensor = None
    values: torch.Tensor = None
    name: ClassVar[str] = "csr"
    buffers: ClassVar[tuple[str, ...]] = ("indptr", "indices", "values")

    @classmethod
    def from_dense(cls, dense) -> "CSR":
        t = _as_tensor(dense, "CSR.from_dense")
        m = _matrix(t)
        rows, k = m.shape
        nz = m != 0
        r, c = torch.nonzero(nz, as_tuple=True)          # row-major order: sorted within rows
        idt = index_dtype(max(k, r.numel()))
        counts = nz.sum(dim=1)
        indptr = torch.zeros(rows + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(tuple(t.shape), t.dtype, indptr=indptr.to(idt), indices=c.to(idt), values=m[r, c].clone())

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def to_dense(self) -> torch.Tensor:
        rows, k = self.rows, self.cols
        out = torch.zeros(rows, k, dtype=self.dtype)
        counts = (self.indptr[1:] - self.indptr[:-1]).long()
        r = torch.repeat_interleave(torch.arange(rows), counts)
        out[r, self.indices.long()] = self.values
        return out.reshape(self.shape)

    def validate(self) -> None:
        self._check_common()
        n = self.name
        rows, k = self.rows, self.cols
        ip, ix = self.indptr, self.indices
        _check(ip.dtype in (torch.int32, torch.int64) and ix.dtype == ip.dtype, n,
               "indptr and indices are int32 or int64, the same type")
        _check(ip.dim() == 1 and ip.numel() == rows + 1, n, f"indptr has rows+1 = {rows + 1} entries (has {ip.numel()})")
        _check(ix.dim() == 1 and self.values.dim() == 1 and ix.numel() == self.values.numel(), n,
               "indices and values are 1-D of equal length")
        _check(self.values.dtype == self.dtype, n, f"values dtype is {self.dtype}")
        _check(int(ip[0]) == 0, n, "indptr[0] == 0")
        d = ip[1:] - ip[:-1]
        if (d < 0).any():
            row = int(torch.nonzero(d < 0)[0])
            raise FormatError(f"{n}: invariant broken: row pointers are non-decreasing "
                              f"(indptr[{row}]={int(ip[row])} > indptr[{row + 1}]={int(ip[row + 1])})")
        _check(int(ip[-1]) == ix.numel(), n, f"indptr[-1] ({int(ip[-1])}) == nnz ({ix.numel()})")
        if ix.numel():
            bad = (ix < 0) | (ix >= k)
            if bad.any():
                p = int(torch.nonzero(bad)[0])
                raise FormatError(f"{n}: invariant broken: column index in [0, {k}) "
                                  f"(indices[{p}] = {int(ix[p])})")
            # sorted and unique within each row: a step inside a row must be positive
            step = ix[1:].long() - ix[:-1].long()
            row_start = torch.zeros(ix.numel(), dtype=torch.bool)
            starts = ip[:-1][d > 0].long()
            row_start[starts] = True
            bad = (step <= 0) & ~row_start[1:]
            if bad.any():
                p = int(torch.nonzero(bad)[0]) + 1
                raise FormatError(f"{n}: invariant broken: column indices strictly increasing within a row "
                                  f"(indices[{p - 1}]={int(ix[p - 1])}, indices[{p}]={int(ix[p])})")


# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Bitmap(SparseFormat):
    """Tiled bitmap (Flash-LLM / SpInfer style): one bit per element + packed non-zeros.

    The ``[rows, K]`` view is cut into ``tile = (tr, tc)`` tiles (partial at the
    edges), ordered row-major by tile. Per tile: ``bits[ti, tj, :]`` holds
    ``ceil(tr*tc/8)`` bytes, element ``(a, b)`` of the tile at bit ``e = a*tc + b``
    (byte ``e // 8``, bit ``e % 8``, LSB first); bits of elements outside the
    matrix are 0. ``tile_ptr[ntiles+1]`` (int32/int64) is the prefix sum of the
    tiles' popcounts, so a kernel can skip empty tiles and find each tile's
    values; ``values[nnz]`` are the non-zeros in tile order, row-major within a tile.
    ``nbytes = ntiles*ceil(tr*tc/8) + (ntiles+1)*idx + nnz*itemsize``.
    """

    tile: tuple[int, int] = (8, 8)
    bits: torch.Tensor = None
    tile_ptr: torch.Tensor = None
    values: torch.Tensor = None
    name: ClassVar[str] = "bitmap"
    buffers: ClassVar[tuple[str, ...]] = ("bits", "tile_ptr", "values")
    params: ClassVar[tuple[str, ...]] = ("tile",)

    @property
    def grid(self) -> tuple[int, int]:
        tr, tc = self.tile
        return -(-self.rows // tr), -(-self.cols // tc)

    @classmethod
    def _tiled(cls, m: torch.Tensor, tile) -> torch.Tensor:
        """``[nti, ntj, tr*tc]`` zero-padded tiles of the matrix."""
        tr, tc = tile
        rows, k = m.shape
        nti, ntj = -(-rows // tr), -(-k // tc)
        p = torch.zeros(nti * tr, ntj * tc, dtype=m.dtype)
        p[:rows, :k] = m
        return p.reshape(nti, tr, ntj, tc).permute(0, 2, 1, 3).reshape(nti, ntj, tr * tc)

    @classmethod
    def from_dense(cls, dense, tile: tuple[int, int] = (8, 8)) -> "Bitmap":
        t = _as_tensor(dense, "Bitmap.from_dense")
        tile = _check_tile(tile, "Bitmap.tile")
        tiles = cls._tiled(_matrix(t), tile)
        nz = tiles != 0
        nbits = tile[0] * tile[1]
        nbytes = -(-nbits // 8)
        padded = torch.zeros(*nz.shape[:2], nbytes * 8, dtype=torch.bool)
        padded[..., :nbits] = nz
        weights = (2 ** torch.arange(8, dtype=torch.int32))
        bits = (padded.reshape(*nz.shape[:2], nbytes, 8).int() * weights).sum(-1).to(torch.uint8)
        counts = nz.reshape(-1, nbits).sum(1)
        idt = index_dtype(max(int(counts.sum()), counts.numel() + 1))
        tile_ptr = torch.zeros(counts.numel() + 1, dtype=torch.int64)
        tile_ptr[1:] = torch.cumsum(counts, 0)
        values = tiles[nz].clone()          # boolean indexing walks tiles, then elements, in order
        return cls(tuple(t.shape), t.dtype, tile=tile, bits=bits, tile_ptr=tile_ptr.to(idt), values=values)

    def _unpacked_bits(self) -> torch.Tensor:
        tr, tc = self.tile
        shifts = torch.arange(8, dtype=torch.int32)
        b = (self.bits.int().unsqueeze(-1) >> shifts) & 1
        return b.reshape(*self.bits.shape[:2], -1).bool()  # [nti, ntj, nbytes*8]

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def to_dense(self) -> torch.Tensor:
        tr, tc = self.tile
        nti, ntj = self.grid
        mask = self._unpacked_bits()[..., : tr * tc]
        tiles = torch.zeros(nti, ntj, tr * tc, dtype=self.dtype)
        tiles[mask] = self.values
        full = tiles.reshape(nti, ntj, tr, tc).permute(0, 2, 1, 3).reshape(nti * tr, ntj * tc)
        return full[: self.rows, : self.cols].contiguous().reshape(self.shape)

    def validate(self) -> None:
        self._check_common()
        n = self.name
        tr, tc = _check_tile(self.tile, "Bitmap.tile", FormatError)
        nti, ntj = self.grid
        nbytes = -(-(tr * tc) // 8)
        _check(self.bits.dtype == torch.uint8 and tuple(self.bits.shape) == (nti, ntj, nbytes), n,
               f"bits is uint8 of shape {(nti, ntj, nbytes)} (got {self.bits.dtype} {tuple(self.bits.shape)})")
        tp = self.tile_ptr
        _check(tp.dtype in (torch.int32, torch.int64) and tp.dim() == 1 and tp.numel() == nti * ntj + 1, n,
               f"tile_ptr is int32/int64 with ntiles+1 = {nti * ntj + 1} entries")
        _check(self.values.dim() == 1 and self.values.dtype == self.dtype, n, f"values is 1-D of dtype {self.dtype}")
        bits = self._unpacked_bits()
        # bits outside the matrix (edge tiles) or past tr*tc must be zero
        inside = self._tiled(torch.ones(self.rows, self.cols, dtype=torch.float32), self.tile) != 0
        valid = torch.zeros_like(bits)
        valid[..., : tr * tc] = inside
        if (bits & ~valid).any():
            ti, tj, e = (int(v) for v in torch.nonzero(bits & ~valid)[0])
            raise FormatError(f"{n}: invariant broken: bits outside the matrix are zero "
                              f"(tile ({ti}, {tj}), bit {e})")
        _check(int(tp[0]) == 0, n, "tile_ptr[0] == 0")
        pop = bits.reshape(nti * ntj, -1).sum(1)
        diff = (tp[1:] - tp[:-1]).long()
        if not torch.equal(diff, pop):
            i = int(torch.nonzero(diff != pop)[0])
            raise FormatError(f"{n}: invariant broken: tile_ptr steps equal each tile's bitmap popcount "
                              f"(tile {divmod(i, ntj)}: popcount {int(pop[i])}, tile_ptr step {int(diff[i])})")
        _check(int(tp[-1]) == self.values.numel(), n,
               f"total popcount ({int(tp[-1])}) == number of values ({self.values.numel()})")


def _check_tile(tile, where: str, err=ParameterError) -> tuple[int, int]:
    try:
        tr, tc = (int(v) for v in tile)
    except (TypeError, ValueError):
        raise err(f"{where}: expected a pair of positive ints, got {tile!r}") from None
    if tr < 1 or tc < 1:
        raise err(f"{where}: tile sides must be >= 1, got {tile!r}")
    return tr, tc


# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class NM(SparseFormat):
    """N:M: at most ``n`` non-zeros in every group of ``m`` consecutive entries along K.

    Rule for ``K % m != 0``: the last group of each row is partial (``g = K % m``
    entries) and is stored like the others. Every group has exactly ``n`` slots:
    ``values[rows, G*n]`` and ``indices[rows, G*n]`` (``G = ceil(K/m)``), where an
    index is the entry's position inside its group, in ``[0, g)``. Non-zero
    values sit at distinct positions, in increasing order; a group with fewer
    than ``n`` non-zeros fills the rest with value-0 slots (padding: they may
    repeat positions and add nothing). Index type: the smallest integer type
    holding ``m-1`` (uint8 for m <= 256).
    ``nbytes = rows*G*n*(itemsize + index itemsize)``.
    """

    n: int = 2
    m: int = 4
    values: torch.Tensor = None
    indices: torch.Tensor = None
    name: ClassVar[str] = "nm"
    buffers: ClassVar[tuple[str, ...]] = ("values", "indices")
    params: ClassVar[tuple[str, ...]] = ("n", "m")

    @property
    def groups(self) -> int:
        return -(-self.cols // self.m)

    @classmethod
    def from_dense(cls, dense, n: int = 2, m: int = 4) -> "NM":
        t = _as_tensor(dense, "NM.from_dense")
        _check_nm(n, m)
        mat = _matrix(t)
        rows, k = mat.shape
        g = -(-k // m)
        p = torch.zeros(rows, g * m, dtype=t.dtype)
        p[:, :k] = mat
        grp = p.reshape(rows, g, m)
        nz = grp != 0
        cnt = nz.sum(-1)
        if (cnt > n).any():
            r, gi = (int(v) for v in torch.nonzero(cnt > n)[0])
            raise PatternError(
                f"NM.from_dense: tensor does not follow {n}:{m}: row {r}, group {gi} "
                f"(columns {gi * m}..{min(gi * m + m, k) - 1}) has {int(cnt[r, gi])} non-zeros > {n}; "
                f"prune it first (sparsec.passes.prune.prune_nm)")
        # Order slots: non-zeros first (by position), then padding positions (zeros), take n.
        pos = torch.arange(m).expand(rows, g, m)
        key = torch.where(nz, pos, pos + m)
        order = torch.argsort(key, dim=-1, stable=True)[..., :n]
        vals = torch.gather(grp, -1, order)
        idx = order.clone()
        # Padding slots of a partial last group must still point inside it: pin them to 0.
        glen = torch.full((g,), m)
        glen[-1] = k - (g - 1) * m if g else m
        outside = idx >= glen.view(1, g, 1)
        idx[outside] = 0
        itype = smallest_uint(m - 1)
        return cls(tuple(t.shape), t.dtype, n=n, m=m, values=vals.reshape(rows, g * n).contiguous(),
                   indices=idx.reshape(rows, g * n).to(itype).contiguous())

    @property
    def nnz(self) -> int:
        return int(torch.count_nonzero(self.values))

    def to_dense(self) -> torch.Tensor:
        rows, k, g, n, m = self.rows, self.cols, self.groups, self.n, self.m
        out = torch.zeros(rows, g * m, dtype=torch.float32)
        col = (torch.arange(g).repeat_interleave(n) * m).unsqueeze(0) + self.indices.long()
        out.scatter_add_(1, col, self.values.float())
        return out[:, :k].to(self.dtype).contiguous().reshape(self.shape)

    def validate(self) -> None:
        self._check_common()
        nm = self.name
        _check_nm(self.n, self.m, FormatError)
        rows, k, g, n, m = self.rows, self.cols, self.groups, self.n, self.m
        want = (rows, g * n)
        _check(tuple(self.values.shape) == want and self.values.dtype == self.dtype, nm,
               f"values is {self.dtype} of shape {want}")
        _check(tuple(self.indices.shape) == want and not self.indices.dtype.is_floating_point, nm,
               f"indices is an integer tensor of shape {want}")
        if rows == 0 or g == 0:
            return
        idx = self.indices.long().reshape(rows, g, n)
        val = self.values.reshape(rows, g, n)
        glen = torch.full((g,), m)
        glen[-1] = k - (g - 1) * m
        bad = (idx < 0) | (idx >= glen.view(1, g, 1))
        if bad.any():
            r, gi, s = (int(v) for v in torch.nonzero(bad)[0])
            raise FormatError(f"{nm}: invariant broken: index within its group's length "
                              f"(row {r}, group {gi}, slot {s}: index {int(idx[r, gi, s])}, "
                              f"group length {int(glen[gi])})")
        # non-zero slots: strictly increasing positions (hence distinct)
        nzv = val != 0
        big = torch.where(nzv, idx, torch.full_like(idx, -1))
        for s in range(1, n):
            prev = big[..., :s].max(-1).values
            bad = nzv[..., s] & (big[..., s] <= prev)
            if bad.any():
                r, gi = (int(v) for v in torch.nonzero(bad)[0])
                raise FormatError(f"{nm}: invariant broken: non-zero entries of a group at distinct, "
                                  f"increasing positions (row {r}, group {gi})")


def _check_nm(n, m, err=ParameterError) -> None:
    if not (isinstance(n, int) and isinstance(m, int)) or m < 2 or n < 1 or n >= m:
        raise err(f"N:M: need integers 1 <= N < M, got N={n!r}, M={m!r}")


# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class BSR(SparseFormat):
    """Block sparse rows with ``block = (r, c)`` blocks over the ``[rows, K]`` view.

    Edge blocks are partial: the matrix is conceptually zero-padded to
    ``ceil(rows/r)*r × ceil(K/c)*c`` and the padding inside stored blocks must be 0.
    ``indptr[nbr+1]``, ``indices[nnzb]`` (block column, sorted and unique within
    a block row), ``blocks[nnzb, r, c]``. A block is stored iff it has a non-zero.
    ``nbytes = (nbr+1)*idx + nnzb*idx + nnzb*r*c*itemsize``.
    """

    block: tuple[int, int] = (4, 4)
    indptr: torch.Tensor = None
    indices: torch.Tensor = None
    blocks: torch.Tensor = None
    name: ClassVar[str] = "bsr"
    buffers: ClassVar[tuple[str, ...]] = ("indptr", "indices", "blocks")
    params: ClassVar[tuple[str, ...]] = ("block",)

    @property
    def grid(self) -> tuple[int, int]:
        r, c = self.block
        return -(-self.rows // r), -(-self.cols // c)

    @classmethod
    def from_dense(cls, dense, block: tuple[int, int] = (4, 4)) -> "BSR":
        t = _as_tensor(dense, "BSR.from_dense")
        r, c = _check_tile(block, "BSR.block")
        mat = _matrix(t)
        rows, k = mat.shape
        nbr, nbc = -(-rows // r), -(-k // c)
        p = torch.zeros(nbr * r, nbc * c, dtype=t.dtype)
        p[:rows, :k] = mat
        bl = p.reshape(nbr, r, nbc, c).permute(0, 2, 1, 3)      # [nbr, nbc, r, c]
        keep = (bl != 0).flatten(2).any(-1)
        bi, bj = torch.nonzero(keep, as_tuple=True)
        idt = index_dtype(max(nbc, bi.numel()))
        indptr = torch.zeros(nbr + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(keep.sum(1), 0)
        return cls(tuple(t.shape), t.dtype, block=(r, c), indptr=indptr.to(idt), indices=bj.to(idt),
                   blocks=bl[bi, bj].contiguous())

    @property
    def nnz(self) -> int:
        return int(torch.count_nonzero(self.blocks))

    @property
    def nnzb(self) -> int:
        return int(self.indices.numel())

    def to_dense(self) -> torch.Tensor:
        r, c = self.block
        nbr, nbc = self.grid
        bl = torch.zeros(nbr, nbc, r, c, dtype=self.dtype)
        counts = (self.indptr[1:] - self.indptr[:-1]).long()
        bi = torch.repeat_interleave(torch.arange(nbr), counts)
        bl[bi, self.indices.long()] = self.blocks
        full = bl.permute(0, 2, 1, 3).reshape(nbr * r, nbc * c)
        return full[: self.rows, : self.cols].contiguous().reshape(self.shape)

    def validate(self) -> None:
        self._check_common()
        n = self.name
        r, c = _check_tile(self.block, "BSR.block", FormatError)
        nbr, nbc = self.grid
        ip, ix = self.indptr, self.indices
        _check(ip.dtype in (torch.int32, torch.int64) and ix.dtype == ip.dtype, n,
               "indptr and indices are int32 or int64, the same type")
        _check(ip.dim() == 1 and ip.numel() == nbr + 1, n, f"indptr has block rows+1 = {nbr + 1} entries")
        _check(self.blocks.dim() == 3 and tuple(self.blocks.shape[1:]) == (r, c)
               and self.blocks.shape[0] == ix.numel() and self.blocks.dtype == self.dtype, n,
               f"blocks is {self.dtype} of shape [nnzb={ix.numel()}, {r}, {c}]")
        _check(int(ip[0]) == 0, n, "indptr[0] == 0")
        d = ip[1:] - ip[:-1]
        if (d < 0).any():
            row = int(torch.nonzero(d < 0)[0])
            raise FormatError(f"{n}: invariant broken: row pointers are non-decreasing "
                              f"(indptr[{row}] > indptr[{row + 1}])")
        _check(int(ip[-1]) == ix.numel(), n, f"indptr[-1] ({int(ip[-1])}) == nnzb ({ix.numel()})")
        if ix.numel():
            bad = (ix < 0) | (ix >= nbc)
            if bad.any():
                p = int(torch.nonzero(bad)[0])
                raise FormatError(f"{n}: invariant broken: block column index in [0, {nbc}) "
                                  f"(indices[{p}] = {int(ix[p])})")
            counts = d.long()
            bi = torch.repeat_interleave(torch.arange(nbr), counts)
            same_row = bi[1:] == bi[:-1]
            bad = same_row & (ix[1:] <= ix[:-1])
            if bad.any():
                p = int(torch.nonzero(bad)[0]) + 1
                raise FormatError(f"{n}: invariant broken: block column indices strictly increasing "
                                  f"within a block row (indices[{p}])")
            # padding inside edge blocks is zero
            rr = torch.arange(r).view(1, r, 1) + bi.view(-1, 1, 1) * r
            cc = torch.arange(c).view(1, 1, c) + ix.long().view(-1, 1, 1) * c
            outside = (rr >= self.rows) | (cc >= self.cols)
            if (outside & (self.blocks != 0)).any():
                p = int(torch.nonzero(outside & (self.blocks != 0))[0][0])
                raise FormatError(f"{n}: invariant broken: padding of edge blocks is zero (block {p})")


# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class GroupQuant(SparseFormat):
    """GQSA-style group sparsity + low-bit per-group quantisation.

    Each row of the ``[rows, K]`` view is cut into groups of ``group`` consecutive
    entries (the last one partial when ``K % group != 0``). All-zero groups are
    dropped (the structured sparsity); each kept group is quantised
    asymmetrically to ``bits`` (4 or 8) with its own scale and zero point:
    with ``lo = min(min(x), 0)``, ``hi = max(max(x), 0)``,
    ``scale = (hi - lo) / (2**bits - 1)`` (1 if hi == lo), ``zp = round(-lo/scale)``,
    ``q = clamp(round(x/scale) + zp, 0, 2**bits - 1)``, ``x̂ = (q - zp) * scale``.
    Zero is exact (q = zp), and ``|x̂ - x| <= scale/2`` for every element (up to
    float32 rounding of the scale itself).

    Buffers: ``indptr[rows+1]`` and ``group_idx[ngk]`` (CSR over groups),
    ``qvalues[ngk, ceil(group*bits/8)]`` uint8 (4-bit: element 2i in the low
    nibble of byte i, 2i+1 in the high nibble; padding nibbles 0),
    ``scales[ngk]`` float32, ``zeros[ngk]`` uint8.
    ``nbytes = (rows+1)*idx + ngk*idx + ngk*ceil(group*bits/8) + ngk*4 + ngk``.
    ``to_dense()`` returns the dequantised tensor in the original dtype.
    """

    group: int = 32
    bits: int = 4
    indptr: torch.Tensor = None
    group_idx: torch.Tensor = None
    qvalues: torch.Tensor = None
    scales: torch.Tensor = None
    zeros: torch.Tensor = None
    name: ClassVar[str] = "groupquant"
    buffers: ClassVar[tuple[str, ...]] = ("indptr", "group_idx", "qvalues", "scales", "zeros")
    params: ClassVar[tuple[str, ...]] = ("group", "bits")

    @property
    def ngroups(self) -> int:
        return -(-self.cols // self.group)

    @classmethod
    def from_dense(cls, dense, group: int = 32, bits: int = 4) -> "GroupQuant":
        t = _as_tensor(dense, "GroupQuant.from_dense")
        _check_gq(group, bits)
        mat = _matrix(t).float()
        rows, k = mat.shape
        ng = -(-k // group)
        p = torch.zeros(rows, ng * group, dtype=torch.float32)
        p[:, :k] = mat
        grp = p.reshape(rows, ng, group)
        keep = (grp != 0).any(-1)
        gi, gj = torch.nonzero(keep, as_tuple=True)
        x = grp[gi, gj]                                          # [ngk, group]
        qmax = 2 ** bits - 1
        lo = torch.clamp(x.min(-1).values, max=0.0)
        hi = torch.clamp(x.max(-1).values, min=0.0)
        scale = (hi - lo) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.clamp(torch.round(-lo / scale), 0, qmax)
        q = torch.clamp(torch.round(x / scale.unsqueeze(1)) + zp.unsqueeze(1), 0, qmax).to(torch.uint8)
        idt = index_dtype(max(ng, gi.numel()))
        indptr = torch.zeros(rows + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(keep.sum(1), 0)
        return cls(tuple(t.shape), t.dtype, group=group, bits=bits, indptr=indptr.to(idt),
                   group_idx=gj.to(idt), qvalues=_pack_bits(q, bits), scales=scale.contiguous(),
                   zeros=zp.to(torch.uint8))

    def codes(self) -> torch.Tensor:
        """The unpacked integer codes ``[ngk, group]`` (uint8)."""
        return _unpack_bits(self.qvalues, self.bits, self.group)

    @property
    def nnz(self) -> int:
        """Stored elements: every element of a kept group (the structured pattern's density)."""
        ngk = int(self.group_idx.numel())
        if ngk == 0:
            return 0
        last = self.cols - (self.ngroups - 1) * self.group
        partial = int((self.group_idx == self.ngroups - 1).sum())
        return ngk * self.group - partial * (self.group - last)

    def to_dense(self) -> torch.Tensor:
        rows, ng, g = self.rows, self.ngroups, self.group
        deq = (self.codes().float() - self.zeros.float().unsqueeze(1)) * self.scales.unsqueeze(1)
        out = torch.zeros(rows, ng, g, dtype=torch.float32)
        counts = (self.indptr[1:] - self.indptr[:-1]).long()
        gi = torch.repeat_interleave(torch.arange(rows), counts)
        out[gi, self.group_idx.long()] = deq
        return out.reshape(rows, ng * g)[:, : self.cols].to(self.dtype).contiguous().reshape(self.shape)

    def validate(self) -> None:
        self._check_common()
        n = self.name
        _check_gq(self.group, self.bits, FormatError)
        rows, ng = self.rows, self.ngroups
        ip, gx = self.indptr, self.group_idx
        _check(ip.dtype in (torch.int32, torch.int64) and gx.dtype == ip.dtype, n,
               "indptr and group_idx are int32 or int64, the same type")
        _check(ip.dim() == 1 and ip.numel() == rows + 1, n, f"indptr has rows+1 = {rows + 1} entries")
        ngk = gx.numel()
        width = -(-self.group * self.bits // 8)
        _check(self.qvalues.dtype == torch.uint8 and tuple(self.qvalues.shape) == (ngk, width), n,
               f"qvalues is uint8 of shape [{ngk}, {width}]")
        _check(self.scales.dtype == torch.float32 and tuple(self.scales.shape) == (ngk,), n,
               f"scales is float32 of shape [{ngk}]")
        _check(self.zeros.dtype == torch.uint8 and tuple(self.zeros.shape) == (ngk,), n,
               f"zeros is uint8 of shape [{ngk}]")
        _check(int(ip[0]) == 0 and int(ip[-1]) == ngk, n, f"indptr[0] == 0 and indptr[-1] == {ngk}")
        d = ip[1:] - ip[:-1]
        _check(not (d < 0).any(), n, "row pointers are non-decreasing")
        if ngk:
            bad = (gx < 0) | (gx >= ng)
            if bad.any():
                p = int(torch.nonzero(bad)[0])
                raise FormatError(f"{n}: invariant broken: group index in [0, {ng}) (group_idx[{p}] = {int(gx[p])})")
            gi = torch.repeat_interleave(torch.arange(rows), d.long())
            bad = (gi[1:] == gi[:-1]) & (gx[1:] <= gx[:-1])
            _check(not bad.any(), n, "group indices strictly increasing within a row")
            qmax = 2 ** self.bits - 1
            _check(not (self.zeros > qmax).any(), n, f"zero points in [0, {qmax}]")
            _check(bool(torch.isfinite(self.scales).all()) and bool((self.scales > 0).all()), n,
                   "scales finite and positive")
            if self.bits == 4 and self.group % 2:
                _check(not (self.qvalues[:, -1] >> 4).any(), n, "padding nibble of odd-sized groups is 0")


def _check_gq(group, bits, err=ParameterError) -> None:
    if not isinstance(group, int) or group < 1:
        raise err(f"GroupQuant: group size must be a positive int, got {group!r}")
    if bits not in (4, 8):
        raise err(f"GroupQuant: bits must be 4 or 8, got {bits!r}")


def _pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return q.contiguous()
    ngk, g = q.shape
    if g % 2:
        q = torch.cat([q, torch.zeros(ngk, 1, dtype=torch.uint8)], 1)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def _unpack_bits(packed: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    if bits == 8:
        return packed
    lo = packed & 0xF
    hi = packed >> 4
    return torch.stack([lo, hi], -1).reshape(packed.shape[0], packed.shape[1] * 2)[:, :group]


# ---------------------------------------------------------------------------
FORMATS: dict[str, type[SparseFormat]] = {
    cls.name: cls for cls in (Dense, CSR, Bitmap, NM, BSR, GroupQuant)
}


def pack(dense, fmt: str, **params) -> SparseFormat:
    """Pack ``dense`` into format ``fmt`` (a key of FORMATS) with its parameters."""
    try:
        cls = FORMATS[fmt]
    except KeyError:
        raise ParameterError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    try:
        return cls.from_dense(dense, **params)
    except TypeError as exc:
        raise ParameterError(f"format {fmt!r}: bad parameters {params}: {exc}") from None
