"""Tensor types of the IR: a static shape and a dtype name."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsec.ir.errors import ModelError

# IR dtype name -> (torch dtype, short name used in the text form)
DTYPES = {
    "float32": (torch.float32, "f32"),
    "float16": (torch.float16, "f16"),
    "bfloat16": (torch.bfloat16, "bf16"),
    "float64": (torch.float64, "f64"),
    "int64": (torch.int64, "i64"),
    "int32": (torch.int32, "i32"),
    "int16": (torch.int16, "i16"),
    "int8": (torch.int8, "i8"),
    "uint8": (torch.uint8, "u8"),
    "bool": (torch.bool, "bool"),
}
_FROM_TORCH = {v[0]: k for k, v in DTYPES.items()}
_FROM_SHORT = {v[1]: k for k, v in DTYPES.items()}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name][0]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}") from None


def dtype_of_torch(dt: torch.dtype) -> str:
    try:
        return _FROM_TORCH[dt]
    except KeyError:
        raise ModelError(f"dtype {dt} is not supported by sparsec's IR") from None


def short_dtype(name: str) -> str:
    return DTYPES[name][1]


def dtype_of_short(short: str) -> str:
    try:
        return _FROM_SHORT[short]
    except KeyError:
        raise ModelError(f"unknown dtype {short!r} in IR text") from None


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ModelError(f"unknown dtype {self.dtype!r}")
        if not all(isinstance(s, int) and s >= 0 for s in self.shape):
            raise ModelError(f"shape {self.shape} must be non-negative ints")

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __str__(self) -> str:
        return f"{short_dtype(self.dtype)}[{', '.join(map(str, self.shape))}]"

    @staticmethod
    def of(t: torch.Tensor) -> "TensorType":
        return TensorType(tuple(int(s) for s in t.shape), dtype_of_torch(t.dtype))
