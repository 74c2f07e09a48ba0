"""Machine and algorithm configuration: frozen dataclasses loaded from TOML.

``default.toml`` beside this module holds every default with its origin; a
user file only needs the fields it changes. Unknown sections or fields, wrong
types and out-of-range values raise :class:`ConfigError` naming the file and
the ``section.field``.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sparsec.errors import ConfigError, ParameterError

DEFAULT_TOML = Path(__file__).with_name("default.toml")


@dataclass(frozen=True)
class CoreConfig:
    count: int = 8
    mtp_pipelines: int = 4
    threads_per_mtp: int = 16
    stp_pipelines: int = 2
    issue_per_cycle: int = 1
    max_outstanding: int = 1

    @property
    def pipelines(self) -> int:
        return self.mtp_pipelines + self.stp_pipelines

    @property
    def threads(self) -> int:
        """Hardware threads per core."""
        return self.mtp_pipelines * self.threads_per_mtp + self.stp_pipelines


@dataclass(frozen=True)
class L1Config:
    enabled: bool = True
    size_bytes: int = 196608
    hit_latency: int = 4


@dataclass(frozen=True)
class ScratchpadConfig:
    size_bytes: int = 4194304
    banks: int = 16
    latency: int = 8
    access_cycles: int = 1
    atomic_cycles: int = 2
    table_fraction: float = 0.75


@dataclass(frozen=True)
class DramConfig:
    channels: int = 8
    gbytes_per_s_per_channel: float = 35.2
    access_bytes: int = 8
    latency: int = 90
    efficiency: float = 1.0


@dataclass(frozen=True)
class MeshConfig:
    rows: int = 4
    cols: int = 4
    hop_latency: int = 2
    link_bytes_per_cycle: float = 32.0
    header_bytes: int = 8


@dataclass(frozen=True)
class DmaConfig:
    words_per_cycle: float = 4.0
    setup_cycles: int = 20


@dataclass(frozen=True)
class SyncConfig:
    barrier_cycles: int = 200


@dataclass(frozen=True)
class CostConfig:
    task: int = 10
    flop: int = 2
    mul: int = 1
    hash: int = 3
    merge_step: int = 3
    heap_level: int = 4
    sort_compare: int = 3
    radix_step: int = 8
    radix_bits: int = 8


@dataclass(frozen=True)
class InnerConfig:
    candidates: str = "nonempty"


@dataclass(frozen=True)
class OuterConfig:
    merge_gather: str = "dma"
    token_flops: int = 256
    dma_block_words: int = 64


@dataclass(frozen=True)
class RowwiseConfig:
    accumulator: str = "dense"
    sort_rows: bool = False


@dataclass(frozen=True)
class SmashConfig:
    load_factor: float = 0.5
    tokenise: bool = True
    token_flops: int = 256
    fragmented: bool = True
    sort_rows: bool = False
    table_share: str = "pool"


# Fields whose value must come from a closed set.
CHOICES = {
    ("inner", "candidates"): ("nonempty", "structure", "all"),
    ("outer", "merge_gather"): ("dma", "loads"),
    ("rowwise", "accumulator"): ("dense", "sorted"),
    ("smash", "table_share"): ("pool", "thread"),
}
# Fields allowed to be zero (everything else numeric must be > 0).
ZERO_OK = {
    ("l1", "hit_latency"), ("scratchpad", "latency"), ("dram", "latency"),
    ("mesh", "hop_latency"), ("mesh", "header_bytes"), ("dma", "setup_cycles"),
    ("sync", "barrier_cycles"), ("core", "stp_pipelines"), ("core", "mtp_pipelines"),
    ("core", "threads_per_mtp"),
}
# Fields bounded above by 1.
FRACTIONS = {("scratchpad", "table_fraction"), ("smash", "load_factor"), ("dram", "efficiency")}


@dataclass(frozen=True)
class PiumaConfig:
    """The whole machine plus per-algorithm switches. Immutable; use ``with_``."""

    clock_ghz: float = 1.0
    core: CoreConfig = field(default_factory=CoreConfig)
    l1: L1Config = field(default_factory=L1Config)
    scratchpad: ScratchpadConfig = field(default_factory=ScratchpadConfig)
    dram: DramConfig = field(default_factory=DramConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    dma: DmaConfig = field(default_factory=DmaConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    costs: CostConfig = field(default_factory=CostConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    outer: OuterConfig = field(default_factory=OuterConfig)
    rowwise: RowwiseConfig = field(default_factory=RowwiseConfig)
    smash: SmashConfig = field(default_factory=SmashConfig)

    # -- derived quantities -------------------------------------------------
    @property
    def dram_words_per_cycle(self) -> float:
        """Aggregate sustained DRAM throughput in 8-byte accesses per core cycle:
        the data-bus peak times ``dram.efficiency`` (the fraction of it that
        independent 8-byte accesses sustain)."""
        d = self.dram
        return (d.channels * d.gbytes_per_s_per_channel * d.efficiency
                / (d.access_bytes * self.clock_ghz))

    def with_(self, **dotted: Any) -> "PiumaConfig":
        """Copy with fields replaced, keys like ``core__count`` or ``clock_ghz``."""
        cfg = self
        for key, value in dotted.items():
            section, _, name = key.partition("__")
            if not name:
                cfg = replace(cfg, **{section: value})
            else:
                cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
        validate(cfg, "<override>")
        return cfg

    def with_threads(self, threads: int) -> "PiumaConfig":
        """Set hardware threads per core; the MTPs take all but the STP threads."""
        c = self.core
        mt = threads - c.stp_pipelines
        if c.mtp_pipelines == 0 or mt < c.mtp_pipelines or mt % c.mtp_pipelines:
            raise ParameterError(
                f"--threads {threads}: must be stp_pipelines ({c.stp_pipelines}) plus a "
                f"multiple of mtp_pipelines ({c.mtp_pipelines}), at least one per MTP")
        return self.with_(core__threads_per_mtp=mt // c.mtp_pipelines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_value(section: str, name: str, value: Any, expected: type, where: str) -> Any:
    label = f"{where}: {section + '.' if section else ''}{name}"
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {value!r}")
        return value
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, got {value!r}")
        allowed = CHOICES.get((section, name))
        if allowed and value not in allowed:
            raise ConfigError(f"{label} must be one of {', '.join(allowed)}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{label} must be a number, got {value!r}")
    if expected is int and not float(value).is_integer():
        raise ConfigError(f"{label} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{label} must be finite, got {value!r}")
    if (section, name) in ZERO_OK:
        if value < 0:
            raise ConfigError(f"{label} must be >= 0, got {value!r}")
    elif value <= 0:
        raise ConfigError(f"{label} must be > 0, got {value!r}")
    if (section, name) in FRACTIONS and value > 1:
        raise ConfigError(f"{label} must be <= 1, got {value!r}")
    return expected(value)


def _types(cls) -> dict[str, type]:
    hints = {"int": int, "float": float, "bool": bool, "str": str}
    return {f.name: hints[f.type] for f in fields(cls) if f.type in hints}


def validate(cfg: PiumaConfig, where: str) -> None:
    """Check cross-field rules that single fields cannot express."""
    c = cfg.core
    if c.threads < 1:
        raise ConfigError(f"{where}: core has no threads (mtp_pipelines * threads_per_mtp + stp_pipelines = 0)")
    if c.mtp_pipelines and not c.threads_per_mtp:
        raise ConfigError(f"{where}: core.threads_per_mtp must be > 0 when core.mtp_pipelines > 0")
    if cfg.dram.access_bytes != 8:
        # Every traffic count in the algorithms is in 8-byte words.
        raise ConfigError(f"{where}: dram.access_bytes must be 8 (the model counts 8-byte words), "
                          f"got {cfg.dram.access_bytes}")


def from_dict(data: dict, where: str, base: PiumaConfig | None = None) -> PiumaConfig:
    """Overlay a parsed TOML mapping on ``base`` (the defaults if omitted)."""
    cfg = base or PiumaConfig()
    sections = {f.name: f for f in fields(PiumaConfig) if f.name != "clock_ghz"}
    for key, value in data.items():
        if key == "clock_ghz":
            cfg = replace(cfg, clock_ghz=_check_value("", key, value, float, where))
            continue
        if key not in sections:
            raise ConfigError(f"{where}: unknown section or field {key!r} "
                              f"(known: clock_ghz, {', '.join(sections)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{key}] must be a table, got {value!r}")
        sub = getattr(cfg, key)
        types = _types(type(sub))
        updates = {}
        for name, v in value.items():
            if name not in types:
                raise ConfigError(f"{where}: unknown field {key}.{name} (known: {', '.join(types)})")
            updates[name] = _check_value(key, name, v, types[name], where)
        cfg = replace(cfg, **{key: replace(sub, **updates)})
    validate(cfg, where)
    return cfg


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None


def load_config(path: str | Path | None = None) -> PiumaConfig:
    """The defaults from ``default.toml``, overlaid with ``path`` if given."""
    cfg = from_dict(_read_toml(DEFAULT_TOML), str(DEFAULT_TOML))
    if path is not None:
        cfg = from_dict(_read_toml(Path(path)), str(path), cfg)
    return cfg
