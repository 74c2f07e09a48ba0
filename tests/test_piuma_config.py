"""PIUMA config: TOML loading, validation messages that name file and field."""
import pytest

from sparsec.errors import ConfigError, ParameterError
from sparsec.sim.piuma import load_config
from sparsec.sim.piuma.config import DEFAULT_TOML, PiumaConfig, from_dict


def test_defaults_match_dataclass_defaults():
    # default.toml and the dataclass defaults must not drift apart
    assert load_config() == PiumaConfig()


def test_hot_chips_figures():
    cfg = load_config()
    assert cfg.core.count == 8
    assert cfg.core.threads == 66
    assert cfg.scratchpad.size_bytes == 4 * 1024 * 1024
    assert cfg.l1.size_bytes == 192 * 1024
    assert cfg.dram.access_bytes == 8
    assert cfg.mesh.rows * cfg.mesh.cols == 16
    # 8 channels x 35.2 GB/s at 1 GHz in 8-byte words
    assert cfg.dram_words_per_cycle == pytest.approx(8 * 35.2 / 8)


def test_user_file_overrides(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("clock_ghz = 2.0\n[core]\ncount = 4\n[smash]\ntokenise = false\n")
    cfg = load_config(f)
    assert cfg.clock_ghz == 2.0 and cfg.core.count == 4 and cfg.smash.tokenise is False
    assert cfg.scratchpad == PiumaConfig().scratchpad


@pytest.mark.parametrize("text, words", [
    ("[core]\ncount = 0\n", ["core.count", "> 0"]),
    ("[core]\ncount = 1.5\n", ["core.count", "integer"]),
    ("[core]\ncores = 3\n", ["core.cores", "unknown"]),
    ("[cpu]\ncount = 3\n", ["cpu", "unknown"]),
    ("[smash]\nload_factor = 1.5\n", ["smash.load_factor", "<= 1"]),
    ("[smash]\ntokenise = 1\n", ["smash.tokenise", "true or false"]),
    ("[rowwise]\naccumulator = \"hash\"\n", ["rowwise.accumulator", "dense, sorted"]),
    ("[smash]\ntable_share = \"core\"\n", ["smash.table_share", "pool, thread"]),
    ("[inner]\ncandidates = \"some\"\n", ["inner.candidates", "nonempty, structure, all"]),
    ("[outer]\ndma_block_words = 0\n", ["outer.dma_block_words", "> 0"]),
    ("[smash]\nsort_rows = \"yes\"\n", ["smash.sort_rows", "true or false"]),
    ("[dram]\naccess_bytes = 64\n", ["dram.access_bytes", "8"]),
    ("[core\ncount = 3\n", ["malformed TOML"]),
    ("core = 3\n", ["[core] must be a table"]),
])
def test_errors_name_file_and_field(tmp_path, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    msg = str(exc.value)
    assert str(f) in msg
    for w in words:
        assert w in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_with_threads():
    cfg = load_config().with_threads(34)        # 2 STP + 4 MTPs x 8
    assert cfg.core.threads == 34 and cfg.core.threads_per_mtp == 8
    with pytest.raises(ParameterError, match="--threads 33"):
        load_config().with_threads(33)


def test_default_toml_documents_every_field():
    text = DEFAULT_TOML.read_text()
    cfg = PiumaConfig().to_dict()
    for section, fields in cfg.items():
        if isinstance(fields, dict):
            assert f"[{section}]" in text
            for name in fields:
                assert f"\n{name} =" in text, f"{section}.{name} missing from default.toml"


def test_dram_efficiency_scales_rate_and_is_a_fraction():
    from sparsec.sim.piuma import simulate
    from sparsec.sim.piuma.inputs import rmat
    cfg = load_config()
    assert cfg.dram.efficiency == 1.0
    half = cfg.with_(dram__efficiency=0.125)
    assert half.dram_words_per_cycle == pytest.approx(cfg.dram_words_per_cycle / 8)
    with pytest.raises(ConfigError, match="dram.efficiency"):
        from_dict({"dram": {"efficiency": 1.5}}, "x")
    # a machine with 1/8 of the sustained DRAM rate can never be faster, and
    # still respects its own DRAM bound
    A = rmat(9, 8, seed=1)
    for algo in ("outer", "smash"):
        fast = simulate(A, A, algo, cfg)
        slow = simulate(A, A, algo, half)
        assert slow.cycles >= fast.cycles
        assert slow.cycles >= slow.counters["dram_accesses"] / half.dram_words_per_cycle
