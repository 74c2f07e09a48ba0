"""RPC measurement through TVM's tracker: one tracker and two servers on loopback.

The same small layer measured locally and through RPC must pass/fail the
correctness check alike (a corrupt kernel is refused on both) and give the
same choice (CSR at 99% sparsity beats dense by a margin far beyond noise).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (pip install tornado)")

from sparsec.passes.autotune.measure import LocalRunner, Settings  # noqa: E402
from sparsec.passes.autotune.rpc import RPCRunner  # noqa: E402
from sparsec.passes.autotune.space import TESTING_ONLY_CORRUPT, Config  # noqa: E402

KEY = "sparsec-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracker():
    port = free_port()
    procs = []

    def start(*args):
        p = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        procs.append(p)
        return p
    try:
        start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1))
        import tvm.rpc
        deadline = time.time() + 60
        while True:
            try:
                tvm.rpc.connect_tracker("127.0.0.1", port).summary()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        deadline = time.time() + 90          # two servers importing TVM on a busy 2-core machine
        for _ in range(2):
            sp = free_port()
            start("tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", KEY, "--host", "127.0.0.1",
                  "--port", str(sp), "--port-end", str(sp + 20))
        while True:
            q = tvm.rpc.connect_tracker("127.0.0.1", port).summary().get("queue_info", {}).get(KEY, {})
            if q.get("free", 0) >= 2:
                break
            if time.time() > deadline:
                raise TimeoutError(f"servers did not register with the tracker: {q}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_rpc_measurement_matches_local(tracker):
    g = torch.Generator().manual_seed(0)
    # 99% sparse and large enough that CSR's lead over dense (~30x less work) dwarfs the noise of a
    # loaded 2-core machine: the check is that both runners agree, not how fast anything is
    w = torch.randn(768, 768, generator=g)
    w[torch.rand(768, 768, generator=g) > 0.01] = 0
    tokens = 64
    dense = Config.make("dense", {}, {"t_tile": None})
    csr = Config.make("csr", {}, {"t_tile": None})
    bad = Config.make("csr", {}, {"t_tile": None, TESTING_ONLY_CORRUPT: True})
    configs = [dense, csr, bad]
    settings = Settings(repeat=5)
    remote = RPCRunner(tracker, KEY, settings=settings, timeout_s=60)
    assert remote.free_devices() == 2
    r_res = remote.run(w, tokens, configs)
    l_res = LocalRunner(settings=settings).run(w, tokens, configs)
    assert [r.status for r in r_res] == [r.status for r in l_res] == ["ok", "ok", "wrong"]
    assert r_res[2].time_s is None and all(r.runner == f"rpc:{KEY}" for r in r_res)

    def choice(res):
        return min((r for r in res if r.status == "ok"), key=lambda r: r.time_s).config
    assert choice(r_res) == choice(l_res) == csr
