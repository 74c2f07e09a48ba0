"""SAT configuration: one frozen dataclass per hardware part, loaded from TOML.

``load_config(path)`` reads ``default.toml`` (next to this file) and overlays
the user's file section by section; unknown sections or keys, wrong types and
out-of-range values raise ``ConfigError`` naming the file, section and key.
``scalesim_config`` is the SCALE-Sim v3 compatible preset (ideal memory,
untiled streaming dimension, cycle count reported as SCALE-Sim does).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from sparsec.ir.errors import ConfigError

DEFAULT_TOML = Path(__file__).with_name("default.toml")


@dataclass(frozen=True)
class ArrayCfg:
    rows: int
    cols: int
    freq_mhz: float
    dataflow: str
    dataflows: tuple
    max_m: int


@dataclass(frozen=True)
class DataCfg:
    elem_bytes: int
    psum_bytes: int
    index_bits: int


@dataclass(frozen=True)
class BufferCfg:
    a_kib: float
    b_kib: float
    out_kib: float
    double_buffer: bool

    def capacity(self, operand: str) -> int:
        return int({"a": self.a_kib, "b": self.b_kib, "out": self.out_kib}[operand] * 1024)


@dataclass(frozen=True)
class DramCfg:
    channels: int
    peak_gbps_per_channel: float
    efficiency: float
    burst_bytes: int
    latency_cycles: int


@dataclass(frozen=True)
class PruneCfg:
    groups_per_cycle: int
    pipeline_cycles: int


@dataclass(frozen=True)
class TilingCfg:
    t_candidates: tuple


@dataclass(frozen=True)
class EnergyCfg:
    mac_dense: float
    select: float
    sram_byte: float
    dram_byte: float
    prune_group: float
    static_pj_per_cycle: float


@dataclass(frozen=True)
class VectorCfg:
    unit: str            # "separate": its own lanes; "array": the PE array fed along one edge (cols lanes)
    lanes: int
    pipeline_cycles: int


@dataclass(frozen=True)
class StepCfg:
    gemm_only: bool      # only the conv/linear GEMMs (and pre-generation), as before the non-GEMM model
    optimizer: str       # for --model and the Python API; built-ins use their recipe
    master_bytes: int    # fp32 master weight and each optimiser state
    srste: bool          # SR-STE refinement in the sparse run's weight update


@dataclass(frozen=True)
class CompatCfg:
    # SCALE-Sim v3 stall-free mode: DRAM takes no time, the streamed dimension
    # is never tiled, and the count is the index of the last cycle (count - 1).
    scalesim: bool = False


@dataclass(frozen=True)
class SatConfig:
    array: ArrayCfg
    data: DataCfg
    buffers: BufferCfg
    dram: DramCfg
    prune: PruneCfg
    tiling: TilingCfg
    energy: EnergyCfg
    vector: VectorCfg
    step: StepCfg
    compat: CompatCfg = CompatCfg()
    source: str = "default.toml"

    @property
    def dram_bytes_per_cycle(self) -> int:
        """Sustained bytes per fabric cycle per channel (integer, rounded down)."""
        d = self.dram
        return max(1, int(d.peak_gbps_per_channel * 1e9 * d.efficiency / (self.array.freq_mhz * 1e6)))

    def index_bits(self, m: int) -> int:
        if m <= 1:
            return 0
        return self.data.index_bits or math.ceil(math.log2(m))


_SECTIONS = {"array": ArrayCfg, "data": DataCfg, "buffers": BufferCfg, "dram": DramCfg,
             "prune": PruneCfg, "tiling": TilingCfg, "energy": EnergyCfg, "vector": VectorCfg, "step": StepCfg,
             "compat": CompatCfg}

# (section, key) -> (kind, low, low_inclusive); kind in int, float, bool, str, list
_RULES = {
    ("array", "rows"): ("int", 1), ("array", "cols"): ("int", 1),
    ("array", "freq_mhz"): ("pos", 0), ("array", "dataflow"): ("str", None),
    ("array", "dataflows"): ("list", None), ("array", "max_m"): ("int", 1),
    ("data", "elem_bytes"): ("int", 1), ("data", "psum_bytes"): ("int", 1),
    ("data", "index_bits"): ("int", 0),
    ("buffers", "a_kib"): ("pos", 0), ("buffers", "b_kib"): ("pos", 0),
    ("buffers", "out_kib"): ("pos", 0), ("buffers", "double_buffer"): ("bool", None),
    ("dram", "channels"): ("int", 1), ("dram", "peak_gbps_per_channel"): ("pos", 0),
    ("dram", "efficiency"): ("frac", 0), ("dram", "burst_bytes"): ("int", 1),
    ("dram", "latency_cycles"): ("int", 0),
    ("prune", "groups_per_cycle"): ("int", 1), ("prune", "pipeline_cycles"): ("int", 0),
    ("tiling", "t_candidates"): ("list", None),
    ("energy", "mac_dense"): ("nonneg", 0), ("energy", "select"): ("nonneg", 0),
    ("energy", "sram_byte"): ("nonneg", 0), ("energy", "dram_byte"): ("nonneg", 0),
    ("energy", "prune_group"): ("nonneg", 0), ("energy", "static_pj_per_cycle"): ("nonneg", 0),
    ("vector", "unit"): ("str", None), ("vector", "lanes"): ("int", 1),
    ("vector", "pipeline_cycles"): ("int", 0),
    ("step", "gemm_only"): ("bool", None), ("step", "optimizer"): ("str", None),
    ("step", "master_bytes"): ("int", 1), ("step", "srste"): ("bool", None),
    ("compat", "scalesim"): ("bool", None),
}


def _check(where: str, section: str, key: str, value):
    kind, low = _RULES[(section, key)]
    name = f"{where}: [{section}] {key}"
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value.lower()
    if kind == "list":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{name} must be a non-empty list, got {value!r}")
        if key == "t_candidates":
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise ConfigError(f"{name} must list positive integers, got {value!r}")
            return tuple(sorted(set(value)))
        return tuple(str(v).lower() for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if kind == "int":
        if not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
        return value
    if kind == "pos" and not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    if kind == "nonneg" and value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    if kind == "frac" and not 0 < value <= 1:
        raise ConfigError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"SAT config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def from_dict(data: dict, where: str = "<dict>", base: SatConfig | None = None) -> SatConfig:
    """Overlay ``data`` ({section: {key: value}}) on ``base`` (the defaults) and validate."""
    merged = {}
    if base is not None:
        for sec in _SECTIONS:
            merged[sec] = {f.name: getattr(getattr(base, sec), f.name) for f in fields(_SECTIONS[sec])}
    for sec, vals in data.items():
        if sec not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{sec}]; expected one of {', '.join(_SECTIONS)}")
        if not isinstance(vals, dict):
            raise ConfigError(f"{where}: [{sec}] must be a table")
        known = {f.name for f in fields(_SECTIONS[sec])}
        for key, value in vals.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key [{sec}] {key}; expected one of {', '.join(sorted(known))}")
            merged.setdefault(sec, {})[key] = _check(where, sec, key, value)
    parts = {}
    for sec, cls in _SECTIONS.items():
        vals = merged.get(sec, {})
        missing = [f.name for f in fields(cls) if f.name not in vals and sec != "compat"]
        if missing:
            raise ConfigError(f"{where}: [{sec}] is missing {', '.join(missing)}")
        parts[sec] = cls(**vals)
    cfg = SatConfig(**parts, source=where)
    validate(cfg)
    return cfg


def validate(cfg: SatConfig) -> None:
    """Cross-field rules (each error names the field)."""
    from sparsec.sim.sat.dataflow import DATAFLOWS
    w = cfg.source
    for df in (cfg.array.dataflow, *cfg.array.dataflows):
        if df not in DATAFLOWS:
            raise ConfigError(f"{w}: [array] dataflow {df!r} unknown; expected one of {', '.join(DATAFLOWS)}")
    if cfg.array.dataflow not in cfg.array.dataflows:
        raise ConfigError(f"{w}: [array] dataflow {cfg.array.dataflow!r} is not in [array] dataflows")
    if cfg.vector.unit not in ("separate", "array"):
        raise ConfigError(f"{w}: [vector] unit must be 'separate' or 'array', got {cfg.vector.unit!r}")
    from sparsec.sim.sat.vector import OPTIMISERS
    if cfg.step.optimizer not in OPTIMISERS:
        raise ConfigError(f"{w}: [step] optimizer {cfg.step.optimizer!r} unknown; expected one of "
                          f"{', '.join(OPTIMISERS)}")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> SatConfig:
    """The default config, overlaid with the TOML file at ``path`` and then ``overrides``."""
    cfg = from_dict(_read(DEFAULT_TOML), where=str(DEFAULT_TOML.name))
    if path is not None:
        cfg = from_dict(_read(Path(path)), where=str(path), base=cfg)
    if overrides:
        cfg = from_dict(overrides, where="overrides", base=cfg)
    return cfg


def scalesim_config(rows: int, cols: int, dataflow: str) -> SatConfig:
    """SCALE-Sim v3 stall-free preset: an R×C systolic array with one fixed dataflow."""
    cfg = load_config(overrides={"array": {"rows": rows, "cols": cols, "dataflow": dataflow,
                                           "dataflows": [dataflow]},
                                 "compat": {"scalesim": True}, "step": {"gemm_only": True}})
    # Buffers never limit the SCALE-Sim stall-free model.
    return replace(cfg, buffers=replace(cfg.buffers, a_kib=1 << 30, b_kib=1 << 30, out_kib=1 << 30))
