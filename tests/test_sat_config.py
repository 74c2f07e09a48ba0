"""Bad configs and bad workloads: one clear error naming the field / layer."""
import pytest

from sparsec.errors import ConfigError, ModelError, ParameterError
from sparsec.sim.sat import Layer, builtin, compare, load_config, simulate
from sparsec.sim.sat.config import DEFAULT_TOML


def _toml(tmp_path, text):
    p = tmp_path / "sat.toml"
    p.write_text(text)
    return p


def test_default_config_loads_and_is_documented():
    cfg = load_config()
    assert (cfg.array.rows, cfg.array.cols) == (32, 32)
    assert cfg.dram_bytes_per_cycle == int(19.2e9 * 0.8 / 200e6)
    text = DEFAULT_TOML.read_text()
    for sec in ("array", "data", "buffers", "dram", "prune", "tiling", "energy"):
        assert f"[{sec}]" in text


def test_override_file(tmp_path):
    cfg = load_config(_toml(tmp_path, "[array]\nrows = 16\n"))
    assert cfg.array.rows == 16 and cfg.array.cols == 32


@pytest.mark.parametrize("text,match", [
    ("[array]\nrows = -4\n", r"\[array\] rows must be >= 1"),
    ("[buffers]\na_kib = -1\n", r"\[buffers\] a_kib must be > 0"),
    ("[dram]\nefficiency = 1.5\n", r"\[dram\] efficiency"),
    ("[array]\ncolumns = 4\n", r"unknown key \[array\] columns"),
    ("[cache]\nx = 1\n", r"unknown section \[cache\]"),
    ("[array]\ndataflow = 'rs'\n", r"dataflow 'rs' unknown"),
    ("[array]\nrows = 'many'\n", r"\[array\] rows must be a number"),
    ("[array\nrows = 1\n", "not valid TOML"),
])
def test_bad_config_fields(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_toml(tmp_path, text))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/sat.toml")


def test_buffer_smaller_than_one_tile(tmp_path):
    cfg = load_config(_toml(tmp_path, "[buffers]\nb_kib = 0.5\n"))
    with pytest.raises(ConfigError, match=r"\[buffers\] b_kib = 0.5 KiB .*layer fc"):
        simulate([Layer("fc", "linear", 512, 512, h=4)], cfg, "2:8", batch=2)


@pytest.mark.parametrize("pattern,match", [("4:4", "N < M"), ("5:2", "N < M"), ("2:32", "max_m"),
                                           ("block:2x2", "N:M")])
def test_bad_patterns(pattern, match):
    with pytest.raises(ParameterError, match=match):
        simulate([Layer("fc", "linear", 16, 16)], load_config(), pattern, batch=2)


def test_bad_workloads():
    with pytest.raises(ParameterError, match="unknown workload 'resnet51'"):
        builtin("resnet51")
    with pytest.raises(ParameterError, match="layer 'c': kernel 5x5 larger"):
        Layer("c", "conv2d", 3, 8, 5, 5, 1, 0, 3, 3)
    with pytest.raises(ParameterError, match="layer 'x': cout must be a positive"):
        Layer("x", "linear", 3, 0)
    with pytest.raises(ParameterError, match="batch must be a positive"):
        simulate([Layer("fc", "linear", 16, 16)], load_config(), "2:8", batch=0)
    with pytest.raises(ParameterError, match="no conv2d/linear"):
        simulate([], load_config(), "2:8", batch=1)
    with pytest.raises(ParameterError, match="repeated: a"):
        simulate([Layer("a", "linear", 4, 4), Layer("a", "linear", 4, 4)], load_config(), "2:8", batch=1)
    with pytest.raises(ParameterError, match="dense is the baseline"):
        compare([Layer("a", "linear", 4, 4)], load_config(), "dense", batch=1)


def test_bad_opts():
    with pytest.raises(ParameterError, match="unknown optimisation"):
        simulate([Layer("fc", "linear", 16, 16)], load_config(), "2:8", batch=2, opts="interleave,fast")


def test_grouped_conv_model_is_rejected():
    from torch import nn

    from sparsec.sim.sat.from_graph import layers_from_hooks
    import torch
    m = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ModelError, match="layer 0: grouped convolution"):
        layers_from_hooks(m, (torch.randn(1, 4, 8, 8),))
