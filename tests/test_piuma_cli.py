"""`sparsec simulate piuma` end to end."""
import json

import pytest

from sparsec.cli import main
from sparsec.sim.piuma.inputs import rmat, save_mtx


def test_generate_all_json(capsys, tmp_path):
    png = tmp_path / "cmp.png"
    rc = main(["simulate", "piuma", "--generate", "rmat:scale=7,ef=4", "--algo", "all",
               "--cores", "2", "--threads", "18", "--json", "--plot", str(png), "--quiet"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == {"inner", "outer", "rowwise", "smash"}
    r = out["results"]["smash"]
    assert r["shape"]["cores"] == 2 and r["shape"]["threads_per_core"] == 18
    for key in ("dram_bytes", "dram_accesses", "atomics", "collisions", "spm_peak_bytes"):
        assert key in r["counters"]
    assert png.stat().st_size > 0


def test_matrix_files_table(capsys, tmp_path):
    a, b = tmp_path / "a.mtx", tmp_path / "b.mtx"
    save_mtx(a, rmat(6, 4, seed=1))
    save_mtx(b, rmat(6, 4, seed=2))
    assert main(["simulate", "piuma", "--matrix", str(a), "--b", str(b), "--algo", "smash",
                 "--quiet"]) == 0
    assert "smash" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--generate", "rmat:scale=5", "--threads", "7"], "--threads 7"),
    (["--generate", "rmat:scale=5", "--cores", "0"], "--cores must be >= 1"),
    (["--matrix", "/nonexistent.mtx"], "no such Matrix Market file"),
    (["--generate", "bogus"], "unknown generator"),
])
def test_errors_are_one_line(capsys, argv, words):
    assert main(["simulate", "piuma", *argv, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
