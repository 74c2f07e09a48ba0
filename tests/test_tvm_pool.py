"""sparsec sizes TVM's CPU thread pool (TVM alone takes half the logical CPUs on x86: one thread on
a 2-vCPU VM, and every parallel kernel ran on it)."""
import os
import subprocess
import sys

import sparsec


def _fake_sysfs(root, topo):
    for cpu, (pkg, core) in topo.items():
        d = root / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{pkg}\n")
        (d / "core_id").write_text(f"{core}\n")


def test_cpu_cores_counts_smt_siblings_once(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    _fake_sysfs(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})     # 2 cores x 2 threads
    assert sparsec.cpu_cores(str(tmp_path)) == 2
    _fake_sysfs(tmp_path / "b", {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)})   # 2 packages x 2 cores
    assert sparsec.cpu_cores(str(tmp_path / "b")) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3})        # affinity: only these count
    assert sparsec.cpu_cores(str(tmp_path / "b")) == 2
    assert sparsec.cpu_cores(str(tmp_path / "missing")) == 2                 # unreadable: the CPU count


def _pool(env):
    code = "import sparsec, tvm; print(tvm.runtime.num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_import_sizes_the_pool_and_respects_the_user():
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    assert _pool(env) == sparsec.cpu_cores()
    assert _pool({**env, "TVM_NUM_THREADS": "1"}) == 1
