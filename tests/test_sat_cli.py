"""`sparsec simulate sat` end to end on a tiny model file and a built-in workload."""
import json

import pytest

from sparsec.cli import main

MODEL = '''
import torch
from torch import nn

model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                      nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))

def example_inputs():
    return (torch.randn(2, 3, 8, 8),)
'''


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "model.py"
    p.write_text(MODEL)
    return p


def test_model_file_json(model_file, capsys):
    assert main(["simulate", "sat", "--model", str(model_file), "--pattern", "2:4", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch"] == 2
    layers = {r["layer"] for r in out["sparse"]["rows"] if r["kind"] == "gemm"}
    assert len(layers) == 3
    # the two ReLUs are counted as vector work, each layer has a weight update
    assert sum(r["kind"] == "vector" for r in out["sparse"]["rows"]) == 4
    assert sum(r["kind"] == "update" for r in out["sparse"]["rows"]) == 3
    assert out["speedup"] <= out["speedup_gemm_only"]
    shapes = [(r["phase"], r["dense_macs"]) for r in out["dense"]["rows"] if r["phase"] == "FF"]
    # conv1: 2·8·8 rows × 27 × 16; conv2: 2·4·4 × 144 × 32; fc: 2 × 512 × 10
    assert sorted(m for _, m in shapes) == sorted([2 * 64 * 27 * 16, 2 * 16 * 144 * 32, 2 * 512 * 10])
    # a toy model: the fixed non-GEMM work and SR-STE can outweigh its tiny GEMMs
    assert 0 < out["speedup"] <= out["speedup_gemm_only"]
    assert 1.0 < out["speedup_gemm_only"] <= out["bound"] == pytest.approx(1.5)
    assert out["speedup"] <= out["work_bound"]


def test_hook_route_gives_same_layers(model_file):
    import runpy

    from sparsec.sim.sat.from_graph import layers_from_hooks, load_layers
    ns = runpy.run_path(str(model_file))
    hooks, b1 = layers_from_hooks(ns["model"], ns["example_inputs"]())
    layers, b2, route = load_layers(model_file)
    assert b1 == b2 == 2
    strip = lambda ls: [(l.kind, l.cin, l.cout, l.kh, l.stride, l.pad, l.h, l.w) for l in ls]
    assert strip(hooks) == strip(layers)


def test_builtin_table_and_plot(tmp_path, capsys):
    png = tmp_path / "out.png"
    assert main(["simulate", "sat", "--workload", "resnet18", "--batch", "2", "--pattern", "2:8",
                 "--opts", "interleave,pregen", "--plot", str(png), "--top", "4", "--quiet", "--gemm-only"]) == 0
    out = capsys.readouterr().out
    assert "speedup vs dense training (GEMMs only)" in out and "bound 3/(2N/M+1) = 2.000x" in out
    assert png.stat().st_size > 1000


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[array]\nrows = 0\n")
    assert main(["simulate", "sat", "--workload", "resnet18", "--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "[array] rows must be >= 1" in err
    assert main(["simulate", "sat", "--workload", "nope"]) == 1
    assert "unknown workload 'nope'" in capsys.readouterr().err
    assert main(["simulate", "sat", "--model", str(tmp_path / "missing.py")]) == 1
    assert "no such model file" in capsys.readouterr().err
