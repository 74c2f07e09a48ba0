"""The `sparsec` command line: version, help, the formats table, error exit codes."""
import json
import subprocess
import sys

from sparsec import __version__
from sparsec.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsec", *args], capture_output=True, text=True)


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sparsec {__version__}"
    r = run_cli("--help")
    assert r.returncode == 0 and "formats" in r.stdout


def test_formats_table_json(capsys):
    assert main(["formats", "--rows", "64", "--cols", "96", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    by_case = {r["case"]: r for r in table}
    assert by_case["dense"]["bytes_vs_dense"] == 1.0
    assert abs(by_case["2:4"]["density"] - 0.5) < 1e-9
    for r in table:
        if r["format"] != "groupquant":
            assert r["max_abs_error"] == 0.0
        assert r["nbytes"] > 0


def test_bad_flag_exits_nonzero():
    r = run_cli("formats", "--rows", "abc")
    assert r.returncode == 2 and "invalid int value" in r.stderr
